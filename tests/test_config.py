"""training.config: the sections, the flat <-> nested mapping, and config.json files of the pre-split layout."""

import dataclasses
import json

import pytest

from attent_jax.training.config import (SECTIONS, DataConfig, OptimConfig, RunConfig, SelectionConfig, TrainConfig,
                                        field_help)

# A config.json as the flat TrainConfig (before the split) wrote it, resolved, for task teach.
OLD_FLAT = {"task": "teach", "model": "attention", "quick": True, "text_file": "", "num_train": 0, "num_test": 0,
            "context": 0, "width": 8, "depth": 1, "num_heads": 1, "selection": "hard", "score": "loss",
            "regime": "scratch", "ratio": 0.5, "ratio_fixed": 0.7, "ratio_start": 0.2, "ratio_end": 0.8,
            "interval": "incremental", "interval_fixed": 2, "interval_min": 1, "interval_max": 10,
            "temperature": 1.0, "normalize_scores": False, "full_epochs_per_cycle": 0, "final_full_share": 0.0,
            "greedy_full_scoring": True, "rescore": "all", "infobatch_prune_ratio": 0.5, "infobatch_anneal": 0.125,
            "epochs": 2, "pretrain_epochs": 2, "batch_size": 16, "learning_rate": 0.001, "weight_decay": 0.05,
            "b1": 0.9, "b2": 0.95, "eps": 1e-08, "warmup_ratio": 0.05, "min_lr_ratio": 0.0, "lr_schedule_by": "steps",
            "grad_clip": 0.0, "fsdp": False, "fsdp_min_size": 16384, "eval_batch_size": 256, "seed": 0,
            "log_every": 20, "checkpoint_every": 200, "keep_checkpoints": 3, "progress_bar": True}


# The MAE objective's model fields (models/mae.py), added since.
MAE_DEFAULTS = dict(patch_size=0, objective="supervised", mask_ratio=0.75, decoder_width=0, decoder_depth=1,
                    norm_pix_loss=False, mask_seed=0)


def test_old_flat_config_json_loads_into_the_sections():
    # A field routed to the wrong section, or dropped, would change one of these.
    cfg = TrainConfig.from_dict(OLD_FLAT)
    # Fields added since (the multi-process settings, the first-epoch option, data placement, LoRA) take their defaults.
    assert cfg.to_flat() == dict(OLD_FLAT, coordinator="", num_processes=0, process_id=-1, first_epoch="select",
                                 data_placement="device", prefetch=2, host_block=8,
                                 checkpoint_epochs=0, score_dtype="float32", lora_rank=0,
                                 **MAE_DEFAULTS)
    assert cfg.data.task == "teach" and cfg.selection.ratio == 0.5 and cfg.run.batch_size == 16
    assert cfg.optim.learning_rate == 0.001 and cfg.model.width == 8


def test_nested_json_round_trips(tmp_path):
    cfg = TrainConfig.from_flat(task="teach", epochs=3, ratio="cosine", learning_rate=0.01).resolve()
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    assert set(json.loads(path.read_text())) == set(SECTIONS)
    assert TrainConfig.from_json_file(str(path)) == cfg


@pytest.mark.parametrize("values, match", [
    (dict(OLD_FLAT, lr=0.1), "unknown field 'lr'"),
    ({"run": {"epochs": 2}, "optimizer": {}}, "unknown section 'optimizer'"),
    ({"run": {"epochs": 2, "learning_rate": 0.1}}, r"unknown field run.learning_rate"),
    (dict(OLD_FLAT, batch_size=-1), "batch_size: got -1"),
    (dict(OLD_FLAT, task="teach", score="discrepancy", model="encoder"), "model: got 'encoder'"),
    ([1, 2], "expected a JSON object"),
])
def test_bad_config_names_the_field(values, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict(values)


def test_every_flat_field_has_one_section_and_a_comment():
    names = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names))           # one flag per field: no name in two sections
    helps = field_help()
    assert set(helps) == set(names) and all(helps.values())


def test_each_section_validates_its_own_fields():
    with pytest.raises(ValueError, match="task: got 'nope'"):
        DataConfig(task="nope")
    with pytest.raises(ValueError, match="ratio: got 1.5"):
        SelectionConfig(ratio=1.5)
    with pytest.raises(ValueError, match="b2: got 1.0"):
        OptimConfig(b2=1.0)
    with pytest.raises(ValueError, match="epochs: got 0"):
        RunConfig(epochs=0)
    with pytest.raises(ValueError, match="data: got dict"):
        TrainConfig(data={"task": "teach"})


def test_replace_changes_only_the_named_fields():
    cfg = TrainConfig.from_flat(task="teach", epochs=3)
    new = cfg.replace(selection="none", epochs=5)
    assert new.selection.selection == "none" and new.run.epochs == 5 and new.data == cfg.data
    assert new.regime() == "full" and cfg.regime() == "scratch"


@pytest.mark.parametrize("field,value", [
    ("seed", 2**32), ("seed", 2**63), ("seed", -1), pytest.param("seed", 10**400, id="seed-10**400"),
    ("mask_seed", 2**32), ("mask_seed", 2**63), ("mask_seed", -1),
])
def test_seed_outside_32_bits_is_a_one_line_error_naming_it(field, value):
    """Catches seeds the PRNG cannot take: 2**63 crashed the run with an OverflowError traceback (from
    jax.random.PRNGKey), and 2**32 silently wrapped to seed 0's key, so "another seed" repeated run 0."""
    with pytest.raises(ValueError, match=rf"^{field}: got {value}, expected an int in \[0, 4294967295\]$"):
        TrainConfig.from_flat(**{field: value})


def test_every_32_bit_seed_is_accepted():
    """Guards the bound itself: 0 and 2**32 − 1 are seeds jax.random.PRNGKey takes as they are."""
    for value in (0, 2**32 - 1):
        cfg = TrainConfig.from_flat(seed=value, mask_seed=value)
        assert cfg.run.seed == value and cfg.model.mask_seed == value


@pytest.mark.parametrize("fields,warns", [
    (dict(regime="infobatch"), True),                                  # attent train --regime infobatch
    (dict(regime="infobatch", lr_schedule_by="epochs"), False),
    (dict(regime="infobatch", infobatch_prune_ratio=0.0), False),     # nothing pruned: the plan holds
    (dict(regime="infobatch", epochs=1), False),                      # no pruning epoch at all
    (dict(regime="scratch"), False),
    (dict(selection="none"), False),
])
def test_infobatch_with_a_step_schedule_warns_that_the_decay_will_not_finish(fields, warns, monkeypatch):
    """Catches `attent train --regime infobatch` (lr_schedule_by "steps" by default) ending silently with
    the learning rate far from the end of its decay: the step schedule counts InfoBatch's epochs as full,
    but InfoBatch prunes part of their steps on device. Such a run must warn, once; other runs not."""
    import warnings

    from attent_jax.training import run_log, stages
    config = TrainConfig.from_flat(**{"task": "teach", "quick": True, "epochs": 8, **fields}).resolve()
    dataset = stages.load_dataset(config.data)
    arrays = {"x": dataset.x_train, "y": dataset.y_train}
    # attent train's stages, and attent_jax.fit's one stage.
    for build in (lambda: stages.build_stages(config, dataset),
                  lambda: stages.user_stage(config, lambda out, batch: out, arrays, arrays)):
        monkeypatch.setattr(run_log, "_warned", set())   # warn_once remembers earlier warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                build()
        messages = [str(w.message) for w in caught if "lr_schedule_by" in str(w.message)]
        assert len(messages) == (1 if warns else 0), messages
        if warns:
            assert "'steps' with the infobatch regime" in messages[0] and "lr_schedule_by='epochs'" in messages[0]
