# Every external dependency is found here, once. All come from Debian packages
# (scripts/setup.sh); LibTorch may come from anywhere through CMAKE_PREFIX_PATH.
find_package(Threads REQUIRED)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(liblzf REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)
find_package(CURL REQUIRED)
find_package(ZLIB REQUIRED)
if(FSTORE_WITH_OPENCV)
  find_package(OpenCV REQUIRED COMPONENTS core imgcodecs imgproc)
  # PNG and JPEG are decoded through these directly, the way PIL decodes them.
  find_package(PNG REQUIRED)
  find_package(JPEG REQUIRED)
endif()
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBZIP REQUIRED IMPORTED_TARGET libzip)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)

if(FSTORE_WITH_TORCH)
  find_package(Torch REQUIRED)
  # fmt, spdlog, HDF5 & co. come built with the C++11 std::string ABI; ClipModel's interface
  # passes std::string, so a LibTorch built with the old ABI (pre-2.7 pip wheels) cannot link.
  if(TORCH_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=0")
    message(FATAL_ERROR "LibTorch ${Torch_VERSION} at ${Torch_DIR} uses the pre-C++11 std::string ABI "
                        "(TORCH_CXX_FLAGS: ${TORCH_CXX_FLAGS}); use a cxx11-ABI LibTorch build")
  endif()
  # fstore_torch: what a target that includes LibTorch headers links. LibTorch 2.13 and later
  # need C++20 where their headers are included; the rest of fstore stays C++17.
  add_library(fstore_torch INTERFACE)
  target_link_libraries(fstore_torch INTERFACE ${TORCH_LIBRARIES})
  if(Torch_VERSION VERSION_GREATER_EQUAL 2.13)
    target_compile_features(fstore_torch INTERFACE cxx_std_20)
  endif()
endif()

if(FSTORE_BUILD_TESTS)
  if(NOT FSTORE_WITH_OPENCV)
    message(FATAL_ERROR "the test suite needs OpenCV: -DFSTORE_WITH_OPENCV=OFF only with -DFSTORE_BUILD_TESTS=OFF")
  endif()
  find_package(GTest REQUIRED)
  if(NOT EXISTS "${FSTORE_PYTHON}")
    message(FATAL_ERROR "FSTORE_PYTHON=${FSTORE_PYTHON} not found: run scripts/setup.sh")
  endif()
endif()
