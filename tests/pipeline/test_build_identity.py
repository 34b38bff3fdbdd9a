#!/usr/bin/python3
"""Which model made what: a store never mixes image rows of two models. The image rows and
the templates carry their own identity attributes, so a text-only rebuild with another
model (--run-text --no-resume) cannot make a later image run resume onto the old model's
rows. And --no-resume discards every image row, loudly (a warning with the count, at the
default log level), whatever --splits says."""
import json
import os
import sys
import tempfile
import zipfile

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_testlib as t  # noqa: E402

MISMATCH = 8


def model_name(model):
    p = t.run([t.FSTORE, "model-info", "--model", model, "--json"])
    return json.loads(p.stdout)["name"]


def main():
    tiny, spm = model_name(t.TINY), model_name(t.TINY_SPM)
    assert tiny != spm, (tiny, spm)
    with tempfile.TemporaryDirectory(prefix="fstore-identity-") as tmp:
        data = os.path.join(tmp, "data")
        t.make_data(data, train=6, val=3, test=4, seed=11)
        h5 = os.path.join(tmp, "s.h5")

        # 1. Both stages with tiny, 4 rows per split at most: 4 + 3 + 4 rows.
        t.run(t.build_cmd(h5, data, "--limit", "4"))
        first = t.read(h5)
        assert len(first["ids"]) == 11
        assert first["attrs"]["fstore_image_model_name"] == tiny
        assert first["attrs"]["fstore_text_model_name"] == tiny

        # 2. Templates only, rebuilt with tiny-spm: the image rows stay tiny's and say so; a
        #    warning says the image rows come from another model.
        p = t.run(t.build_cmd(h5, data, "--run-text", "--no-resume", model=t.TINY_SPM))
        assert "another model" in p.stderr and "--run-image --no-resume" in p.stderr, p.stderr
        second = t.read(h5)
        t.compare_rows(second, first, "image rows after a text-only rebuild", exact=True)
        assert second["attrs"]["fstore_image_model_name"] == tiny, second["attrs"]
        assert second["attrs"]["fstore_image_model_sha256"] == first["attrs"]["fstore_image_model_sha256"]
        assert second["attrs"]["fstore_text_model_name"] == spm, second["attrs"]
        assert second["attrs"]["fstore_text_model_sha256"] != first["attrs"]["fstore_text_model_sha256"]

        # 3. An image run with tiny-spm must not append to tiny's rows: refused, untouched.
        p = t.run(t.build_cmd(h5, data, "--run-image", model=t.TINY_SPM), check_rc=MISMATCH)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "image rows made with model '%s', not '%s'" % (tiny, spm) in p.stderr, p.stderr
        assert "--no-resume" in p.stderr, p.stderr
        t.compare_rows(t.read(h5), first, "image rows after a refused image run", exact=True)
        # ... and the same with tiny (whose templates are gone) is refused too: the store
        # would hold templates of tiny-spm and image rows of tiny.
        p = t.run(t.build_cmd(h5, data, "--run-image"), check_rc=MISMATCH)
        assert "templates made with model '%s', not '%s'" % (spm, tiny) in p.stderr, p.stderr
        assert "image rows made" not in p.stderr, p.stderr
        # The fix offered re-encodes only what differs: the templates, not the good rows.
        assert "--run-text --no-resume to re-encode only the templates (the image rows are kept)" in p.stderr, p.stderr

        # 4. --run-image --no-resume with tiny-spm re-encodes every row: equal to a fresh
        #    tiny-spm store, one model throughout.
        t.run(t.build_cmd(h5, data, "--run-image", "--no-resume", model=t.TINY_SPM))
        t.verify(h5)
        fresh_path = os.path.join(tmp, "fresh.h5")
        t.run(t.build_cmd(fresh_path, data, "--run-image", model=t.TINY_SPM))
        rebuilt = t.read(h5)
        t.compare_rows(rebuilt, t.read(fresh_path), "rebuilt vs fresh tiny-spm store")
        assert rebuilt["attrs"]["fstore_image_model_name"] == spm
        assert rebuilt["attrs"]["fstore_text_model_name"] == spm
        # Now consistent: a plain resume with tiny-spm is accepted and adds nothing; the
        # templates it stored are kept as they are, not encoded again.
        before = t.read(h5)
        p = t.run(t.build_cmd(h5, data, "--json", model=t.TINY_SPM))
        assert "another model" not in p.stderr, p.stderr
        summary = json.loads(p.stdout)
        assert summary["templates_kept"] == 12 and len(summary["templates"]) == 12, summary
        after = t.read(h5)
        assert len(after["ids"]) == 13
        t.compare_templates(after, before, "kept templates", exact=True)
        for tid in before["templates"]:
            assert after["templates"][tid]["attrs"]["created_at"] == before["templates"][tid]["attrs"]["created_at"]
        # One template lost (deleted with h5py): only it is encoded again.
        with h5py.File(h5, "a") as f:
            del f["templates/label_prompts_t02"]
        summary = json.loads(t.run(t.build_cmd(h5, data, "--run-text", "--json", model=t.TINY_SPM)).stdout)
        assert summary["templates_kept"] == 11, summary
        t.compare_templates(t.read(h5), before, "templates after re-encoding one")
        # --no-resume encodes every template again.
        summary = json.loads(t.run(t.build_cmd(h5, data, "--run-text", "--no-resume", "--json",
                                               model=t.TINY_SPM)).stdout)
        assert summary["templates_kept"] == 0 and len(summary["templates"]) == 12, summary

        # 5. --no-resume with --splits val discards the rows of every split, with a warning
        #    (default log level) that gives the count; --help says so too.
        p = t.run(t.build_cmd(h5, data, "--run-image", "--no-resume", "--splits", "val", model=t.TINY_SPM))
        warned = [line for line in p.stderr.splitlines() if "--no-resume" in line]
        assert len(warned) == 1 and "13" in warned[0] and "all" in warned[0].lower(), p.stderr
        after = t.read(h5)
        assert after["split"] == ["val"] * 3, after["split"]
        np.testing.assert_array_equal(after["ids"], np.arange(3))
        help_text = t.run([t.FSTORE, "build", "--help"]).stdout
        assert "ALL image rows" in help_text, help_text

    check_npz_fingerprint()
    check_precision_is_part_of_the_image_identity()
    check_mismatch_hint_names_only_what_exists()
    check_templates_of_unknown_origin()
    check_interrupted_text_stage_keeps_prompts_consistent()
    check_foreign_and_damaged_template_groups()
    print("ok")


def check_foreign_and_damaged_template_groups():
    """After a text run the store holds exactly the prompt set's groups, whole: groups of
    another set left under this store's identity (the reference writes its groups and leaves
    the identity attributes alone) are removed, and a damaged group is encoded again."""
    with tempfile.TemporaryDirectory(prefix="fstore-foreign-templates-") as tmp:
        data = os.path.join(tmp, "data")
        t.make_data(data, train=2, val=1, test=1, seed=5)
        prompts = os.path.join(tmp, "small.json")
        with open(prompts, "w") as f:
            json.dump(SMALL_PROMPTS, f)
        h5 = os.path.join(tmp, "s.h5")
        t.run(t.build_cmd(h5, data, "--run-text", "--prompts", prompts))
        own = sorted(t.read(h5)["templates"])
        with h5py.File(h5, "a") as f:
            for name in ("label_prompts_t02", "label_prompts_t03"):
                f.copy(f["templates/label_prompts_t01"], f["templates"], name)
        for extra in ([], ["--no-resume"]):
            with h5py.File(h5, "a") as f:
                if "label_prompts_t02" not in f["templates"]:
                    f.copy(f["templates/label_prompts_t01"], f["templates"], "label_prompts_t02")
            p = t.run(t.build_cmd(h5, data, "--run-text", "--prompts", prompts, "--json", *extra))
            assert sorted(t.read(h5)["templates"]) == own, (extra, sorted(t.read(h5)["templates"]))
            assert "does not write (label_prompts_t02" in p.stderr, p.stderr
            t.verify(h5)
        before = t.read(h5)
        for group, dataset in (("label_prompts_t01", "texts"), ("concept_prompts_t01", "text_token_features"),
                               ("concept_prompts_t02", "text_features")):
            with h5py.File(h5, "a") as f:
                del f["templates/%s/%s" % (group, dataset)]
            summary = json.loads(t.run(t.build_cmd(h5, data, "--run-text", "--prompts", prompts, "--json")).stdout)
            assert summary["templates_kept"] == len(own) - 1, (group, dataset, summary)
            t.verify(h5)
        t.compare_templates(t.read(h5), before, "templates encoded again")


def check_mismatch_hint_names_only_what_exists():
    """Rows of another dataset in a store without templates: the hint is a plain
    --no-resume, not one that claims templates are kept (and drops the text stage)."""
    with tempfile.TemporaryDirectory(prefix="fstore-hint-") as tmp:
        data, other = os.path.join(tmp, "data"), os.path.join(tmp, "other")
        t.make_data(data, train=2, val=1, test=1, seed=5)
        t.make_data(other, train=2, val=1, test=1, seed=6)
        h5 = os.path.join(tmp, "s.h5")
        t.run(t.build_cmd(h5, data, "--skip-text"))
        p = t.run(t.build_cmd(h5, other), check_rc=MISMATCH)
        assert "pass --no-resume to rebuild it with these inputs" in p.stderr, p.stderr
        assert "templates are kept" not in p.stderr, p.stderr
        t.run(t.build_cmd(h5, data, "--run-text"))  # now it has templates
        p = t.run(t.build_cmd(h5, other), check_rc=MISMATCH)
        assert "pass --run-image --no-resume to re-encode only the image rows (the templates are kept)" in p.stderr


def check_precision_is_part_of_the_image_identity():
    """Rows encoded at fp16/bf16 are not appended to rows encoded at fp32 (or the other way
    round). A CPU runs fp32 only, so the store is made to say fp16 as a GPU run would."""
    with tempfile.TemporaryDirectory(prefix="fstore-precision-") as tmp:
        data = os.path.join(tmp, "data")
        t.make_data(data, train=4, val=1, test=1, seed=5)
        h5 = os.path.join(tmp, "s.h5")
        t.run(t.build_cmd(h5, data, "--run-image", "--limit", "2"))
        assert t.read(h5)["attrs"]["fstore_image_precision"] == "fp32"
        with h5py.File(h5, "a") as f:
            f.attrs["fstore_image_precision"] = "fp16"
        before = t.read(h5)
        p = t.run(t.build_cmd(h5, data, "--run-image"), check_rc=MISMATCH)
        assert "image rows made with precision 'fp16', not 'fp32'" in p.stderr, p.stderr
        t.compare_rows(t.read(h5), before, "rows after a refused resume at another precision", exact=True)
        # A store from before the attribute (or from the reference) resumes and adopts it.
        with h5py.File(h5, "a") as f:
            del f.attrs["fstore_image_precision"]
        t.run(t.build_cmd(h5, data, "--run-image"))
        assert t.read(h5)["attrs"]["fstore_image_precision"] == "fp32"


SMALL_PROMPTS = {"label_texts": ["a", "b"], "label_templates": ["x {} y"], "concept_texts": ["c1", "c2", "c3"],
                 "concept_templates": ["t {}", "u {}"]}


def check_templates_of_unknown_origin():
    """Templates without fstore's identity attributes (the reference writes none) may be of
    any model or prompt set: a text run replaces all of them, so none that the new prompt
    set does not rewrite survives under the identity it records."""
    with tempfile.TemporaryDirectory(prefix="fstore-unknown-templates-") as tmp:
        data = os.path.join(tmp, "data")
        t.make_data(data, train=2, val=1, test=1, seed=3)
        h5 = os.path.join(tmp, "s.h5")
        t.run(t.build_cmd(h5, data, "--run-text"))
        with h5py.File(h5, "a") as f:  # as the reference leaves it: 12 templates, no identity
            for name in [n for n in f.attrs if n.startswith("fstore_text_") or n == "fstore_prompt_hash"]:
                del f.attrs[name]
            f.copy(f["templates/label_prompts_t03"], f["templates"], "my_own")  # a user's group: kept
        prompts = os.path.join(tmp, "small.json")
        with open(prompts, "w") as f:
            json.dump(SMALL_PROMPTS, f)
        for extra in ([], ["--no-resume"]):
            p = t.run(t.build_cmd(h5, data, "--run-text", "--prompts", prompts, "--json", *extra))
            assert sorted(t.read(h5)["templates"]) == ["concept_prompts_t01", "concept_prompts_t02",
                                                       "label_prompts_t01", "my_own"], t.read(h5)["templates"].keys()
            t.verify(h5)
            if not extra:
                assert "record no model or prompt set" in p.stderr, p.stderr
                assert json.loads(p.stdout)["templates_kept"] == 0
        # Another prompt set with --no-resume drops the old set's groups, not the user's.
        with open(prompts, "w") as f:
            json.dump(dict(SMALL_PROMPTS, concept_templates=["v {}"]), f)
        t.run(t.build_cmd(h5, data, "--run-text", "--prompts", prompts, "--no-resume"))
        assert sorted(t.read(h5)["templates"]) == ["concept_prompts_t01", "label_prompts_t01", "my_own"]


def check_interrupted_text_stage_keeps_prompts_consistent():
    """A text run with new prompts interrupted after its first template: the prompt
    attributes already describe the new set, so every template on disk matches them."""
    import signal
    import subprocess
    with tempfile.TemporaryDirectory(prefix="fstore-text-interrupt-") as tmp:
        data = os.path.join(tmp, "data")
        t.make_data(data, train=2, val=1, test=1, seed=3)
        h5 = os.path.join(tmp, "s.h5")
        t.run(t.build_cmd(h5, data, "--run-text"))
        prompts = os.path.join(tmp, "reversed.json")
        with open(prompts, "w") as f:
            json.dump(dict(SMALL_PROMPTS, concept_texts=SMALL_PROMPTS["concept_texts"][::-1]), f)
        cmd = t.build_cmd(h5, data, "--run-text", "--no-resume", "--prompts", prompts, "--log-level", "debug")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, FSTORE_TEST_STEP_DELAY_MS="300"))
        for line in proc.stderr:
            if "text: template concept_prompts_t01 committed" in line:
                proc.send_signal(signal.SIGINT)
                break
        proc.communicate(timeout=60)
        assert proc.returncode == 130, proc.returncode
        store = t.read(h5)
        assert json.loads(store["attrs"]["concept_texts"]) == ["c3", "c2", "c1"], store["attrs"]["concept_texts"]
        assert json.loads(store["attrs"]["prompt_temp_for_concepts"]) == ["t {}", "u {}"]
        assert store["templates"]["concept_prompts_t01"]["texts"] == ["t c3", "t c2", "t c1"]
        t.verify(h5)
        p = t.run([t.FSTORE_ACCESS, "--path", h5, "fetch", "--concept-list", "c1", "--json"])
        assert json.loads(p.stdout)["templates"]["concept_prompts_t01"]["shape"][0] == 1, p.stdout
        assert len(store["templates"]) < 3, store["templates"].keys()  # it was interrupted


def rezip_reversed(path):
    """The same members, deflated, in reverse order: other bytes, same content."""
    with zipfile.ZipFile(path) as z:
        members = [(name, z.read(name)) for name in z.namelist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in reversed(members):
            z.writestr(name, data)


def check_npz_fingerprint():
    """Rows on disk and the rows resumed after them come from the same .npz content, not
    just from a file of the same name: a store records its npz's member table digest."""
    with tempfile.TemporaryDirectory(prefix="fstore-npz-identity-") as tmp:
        data = os.path.join(tmp, "data")
        npz = os.path.join(data, "bloodmnist.npz")
        t.make_data(data, train=6, val=3, test=4, seed=21)
        h5 = os.path.join(tmp, "s.h5")
        t.run(t.build_cmd(h5, data, "--run-image", "--splits", "train"))
        first = t.read(h5)
        recorded = first["attrs"]["fstore_npz_members_sha256"]
        assert len(recorded) == 64 and int(recorded, 16) >= 0, recorded

        # Another file under the same name: refused in one line, store untouched.
        os.rename(npz, npz + ".orig")
        t.make_data(data, train=6, val=3, test=4, seed=22)
        p = t.run(t.build_cmd(h5, data, "--run-image"), check_rc=MISMATCH)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "bloodmnist.npz members (SHA-256) '%s...'" % recorded[:12] in p.stderr, p.stderr
        assert "--no-resume" in p.stderr, p.stderr
        t.compare_rows(t.read(h5), first, "rows after a refused resume from another npz", exact=True)

        # The original content repacked (other bytes, same members): resumes, and the result
        # equals an uninterrupted build from the original file.
        os.replace(npz + ".orig", npz)
        fresh = os.path.join(tmp, "fresh.h5")
        t.run(t.build_cmd(fresh, data, "--run-image"))
        rezip_reversed(npz)
        t.run(t.build_cmd(h5, data, "--run-image"))
        t.verify(h5)
        t.compare_rows(t.read(h5), t.read(fresh), "resumed from a repacked npz vs uninterrupted", exact=True)

        # A store that predates the fingerprint (attribute absent) resumes and adopts it.
        with h5py.File(h5, "a") as f:
            del f.attrs["fstore_npz_members_sha256"]
        t.run(t.build_cmd(h5, data, "--run-image"))
        assert t.read(h5)["attrs"]["fstore_npz_members_sha256"] == recorded

        # --no-resume rebuilds from a new file and records its fingerprint.
        t.make_data(data, train=6, val=3, test=4, seed=23)
        t.run(t.build_cmd(h5, data, "--run-image", "--no-resume"))
        rebuilt = t.read(h5)
        assert rebuilt["attrs"]["fstore_npz_members_sha256"] != recorded
        assert len(rebuilt["ids"]) == 13


if __name__ == "__main__":
    main()
