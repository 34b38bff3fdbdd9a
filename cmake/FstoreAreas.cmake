# fstore_add_areas(): adds the subdirectory of each module area that has one, in dependency
# order. src/ and tests/ share it, so both skip the LibTorch areas alike when
# FSTORE_WITH_TORCH is off.
function(fstore_add_areas)
  foreach(area common store access text image model pipeline)
    if(EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${area}/CMakeLists.txt")
      if(area MATCHES "^(model|pipeline)$" AND NOT FSTORE_WITH_TORCH)
        continue()
      endif()
      add_subdirectory(${area})
    endif()
  endforeach()
endfunction()
