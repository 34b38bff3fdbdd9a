#!/usr/bin/python3
"""`fstore build` end to end on generated BloodMNIST-format data with models/tiny.pt:
the store passes `fstore-access verify` and equals, row by row, what the Python reference
writer (tests/python/reference_pipeline.py) writes from the same archive and data:
image rows within fp16 rounding, templates, texts and attributes included."""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_testlib as t  # noqa: E402


def main():
    with tempfile.TemporaryDirectory(prefix="fstore-e2e-") as tmp:
        data = os.path.join(tmp, "data")
        arrays = t.make_data(data, train=9, val=3, test=5, seed=3)
        ours = os.path.join(tmp, "fstore.h5")
        ref = os.path.join(tmp, "reference.h5")

        p = t.run(t.build_cmd(ours, data, "--run-text", "--run-image", "--json"))
        summary = json.loads(p.stdout)
        assert p.stderr == "", "--no-progress at the default log level must print nothing: %r" % p.stderr
        assert summary["total_new"] == 17 and summary["total_rows"] == 17, summary
        assert [s["appended"] for s in summary["splits"]] == [9, 3, 5], summary
        assert [s["split"] for s in summary["splits"]] == ["train", "val", "test"], summary
        assert len(summary["templates"]) == 12 and summary["interrupted"] is False, summary
        assert 0 < summary["image_seconds"] < summary["seconds"], summary
        assert abs(summary["images_per_second"] - 17 / summary["image_seconds"]) < 1e-6 * summary["images_per_second"], summary
        assert summary["templates"][0] == {"id": "concept_prompts_t01", "texts": 15}, summary["templates"][0]
        t.verify(ours)

        t.run(["/usr/bin/python3", t.REFERENCE, "--model", t.TINY, "--h5", ref, "--data-root", data,
               "--size", "28", "--batch-size", "4"])
        a, b = t.read(ours), t.read(ref)
        t.compare_rows(a, b, "fstore vs reference")
        t.compare_templates(a, b, "fstore vs reference")
        t.compare_attrs(a, b, "fstore vs reference")
        assert a["dtypes"] == b["dtypes"] and a["chunks"] == b["chunks"], (a["chunks"], b["chunks"])

        # Labels come from the data itself (first column), splits in order.
        expected_labels = [int(x) for s in ("train", "val", "test") for x in arrays[s + "_labels"][:, 0]]
        assert a["labels"].tolist() == expected_labels
        assert a["split"] == ["train"] * 9 + ["val"] * 3 + ["test"] * 5

        # The identity attributes a resume is checked against.
        for k in ("fstore_image_model_name", "fstore_image_model_sha256", "fstore_dataset", "fstore_image_size",
                  "fstore_labels_sha256", "fstore_source_entries", "fstore_text_model_name",
                  "fstore_text_model_sha256", "fstore_prompt_hash"):
            assert k in a["attrs"], k
        assert a["attrs"]["fstore_image_size"] == "28" and a["attrs"]["fstore_dataset"] == "bloodmnist"
        assert a["attrs"]["fstore_image_model_sha256"] == a["attrs"]["fstore_text_model_sha256"]
        assert json.loads(a["attrs"]["fstore_source_entries"]) == {
            s: {"rows": n, "entries": n} for s, n in (("train", 9), ("val", 3), ("test", 5))}

        # The human summary names templates with counts, samples per split and the total.
        text = t.run(t.build_cmd(os.path.join(tmp, "text.h5"), data, "--run-text")).stdout
        assert "concept_prompts_t09: 15 texts" in text and "label_prompts_t03: 8 texts" in text, text
        again = t.run(t.build_cmd(ours, data, "--skip-text")).stdout
        assert "train: 0 new (resumed after 9 on disk), 9 total" in again, again
        assert "Total new samples: 0 (store holds 17 rows)" in again, again

        # Custom prompts (a JSON file) are what gets stored.
        prompts = os.path.join(tmp, "prompts.json")
        with open(prompts, "w") as f:
            json.dump({"label_texts": ["a", "b"], "label_templates": ["photo of {}"],
                       "concept_texts": ["round nucleus"], "concept_templates": ["{} seen", "cell with {}"]}, f)
        custom = os.path.join(tmp, "custom.h5")
        t.run(t.build_cmd(custom, data, "--run-text", "--prompts", prompts))
        c = t.read(custom)
        assert sorted(c["templates"]) == ["concept_prompts_t01", "concept_prompts_t02", "label_prompts_t01"]
        assert c["templates"]["label_prompts_t01"]["texts"] == ["photo of a", "photo of b"]
        assert c["attrs"]["concept_texts"] == '["round nucleus"]'
        ref_custom = os.path.join(tmp, "ref_custom.h5")
        t.run(["/usr/bin/python3", t.REFERENCE, "--model", t.TINY, "--h5", ref_custom, "--run-text",
               "--prompts", prompts])
        t.compare_templates(c, t.read(ref_custom), "custom prompts")
    print("ok")


if __name__ == "__main__":
    main()
