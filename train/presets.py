"""`python -m train fit --preset NAME`: the settings for photos on a GPU, one table.

A preset is a settings file kept in code: the same sections and keys as a `--config` file (see
train/config_file.py), validated the same way when applied. Precedence: built-in defaults <
preset < config file < explicit flags, so `--preset flickr8k --epochs 5` changes only the epochs.

Both presets follow Xu et al. 2015 (soft attention, §4.2 and §5) where the project can:

- encoder: ConvNeXt-Tiny pretrained on ImageNet-22k (timm `convnext_tiny.fb_in22k`, the backbone README
  "Encoders" recommends for photos) cut at its stride-16 map: 14×14×384 at 224 px, the paper's 14×14
  grid (its VGG gave 14×14×512), frozen as in the paper. `--encoder timm:resnet101.a1h_in1k` gives the
  paper-era tutorials' ResNet-101 (14×14×1024) instead;
- decoder: LSTM with 512-unit embedding, attention MLP and hidden state, dropout 0.5, the gating
  scalar β (§4.2.1) and h₀/c₀ from the mean annotation (§3.1.2);
- data: all 5 captions of every image each epoch (`captions_per_image: 0`), Karpathy's splits
  (Flickr8k: the official 6,000 / 1,000 / 1,000, which Karpathy's file repeats; COCO:
  `dataset_coco.json`, 5,000 val / 5,000 test, restval folded into train);
- early stopping on the BLEU-4 of generated validation captions, beam 3 on the test split.

NOTE: the doubly stochastic penalty stays at the project default (`alpha_c: 0`, see README
"Train"); `--alpha-c` turns it on. `--bf16` helps on Ampere and newer GPUs; it is off here so the
presets run anywhere.
"""
from __future__ import annotations

_PHOTO_MODEL = {
    "encoder": "timm:convnext_tiny.fb_in22k", "feature_map": "stride16", "image_size": 224,
    "finetune_blocks": 0, "attention": "soft", "decoder": "lstm", "embed_dim": 512,
    "attention_dim": 512, "decoder_dim": 512, "dropout": 0.5, "gate": True, "init_state": "mean",
}
# NOTE: not measured here (no photo dataset on the project's machines): Adam lr 4e-4 is the decoder lr of
# the widely used PyTorch re-implementation (sgrvinod's tutorial) for this 512-unit model; the longer
# patience (2 epochs for the LR, 5 to stop) allows for a validation BLEU-4 noisier than the scenes'.
_PHOTO_TRAIN = {
    "epochs": 30, "batch_size": 64, "lr": 4e-4, "grad_clip": 5.0, "lr_patience": 2, "lr_factor": 0.5,
    "early_stop": 5, "captions_per_image": 0,
}

PRESETS: dict[str, dict[str, dict]] = {
    "flickr8k": {
        "model": _PHOTO_MODEL,
        "train": _PHOTO_TRAIN,
        "data": {"dataset": "flickr8k", "data_root": "data/flickr8k", "min_freq": 5, "val_images": 1000},
        "run": {"beam_size": 3},
    },
    "coco": {
        "model": _PHOTO_MODEL,
        "train": _PHOTO_TRAIN,
        "data": {"dataset": "coco", "data_root": "data/coco", "annotations": "data/coco/dataset_coco.json",
                 "min_freq": 5, "val_images": 5000},
        "run": {"beam_size": 3},
    },
}
"""Preset name → {section: {field: value}}; sections and fields as in a `--config` file."""

PAPER_SCORES: dict[str, dict[str, float]] = {
    "flickr8k": {"bleu4": 19.5, "meteor": 18.93},
    "coco": {"bleu4": 24.3, "meteor": 23.9},
}
"""Xu et al. 2015, Table 1, soft attention (×100): the numbers a preset's run compares with."""
