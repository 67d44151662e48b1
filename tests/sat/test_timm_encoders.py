"""Any timm model as the encoder, its pretrained weights through timm's own Hub loading, offline.

Nothing can be downloaded here, so the module writes tiny timm test models' weights (the ones timm
registers with Hub ids, `timm.list_models('test_*', pretrained=True)`) into a Hugging Face cache laid
out exactly as huggingface_hub writes it (tests/hub_cache.py) and builds the encoders with
``pretrained=True`` in a subprocess with HF_HUB_CACHE and HF_HUB_OFFLINE=1: no mock of timm or the hub.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sat.paths import REPO
from tests.hub_cache import add_snapshot, offline_env, repo_folder, set_ref

pytestmark = pytest.mark.slow  # NOTE: subprocesses that load timm models and train

ARCHS = ["test_efficientnet.r160_in1k", "test_resnet.r160_in1k", "test_convnext.r160_in1k", "test_vit.r160_in1k"]
COMMITS = {a: f"{i + 1:x}" * 40 for i, a in enumerate(ARCHS)}


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    """A Hub cache holding random (seeded) weights for each of ARCHS, as timm/<arch>@main."""
    import timm
    import torch
    from safetensors.torch import save

    root = tmp_path_factory.mktemp("hf")
    for i, arch in enumerate(ARCHS):
        torch.manual_seed(100 + i)
        sd = {k: v.contiguous() for k, v in timm.create_model(arch, pretrained=False).state_dict().items()}
        repo_dir = repo_folder(root / "hub", f"timm/{arch}")
        add_snapshot(repo_dir, COMMITS[arch], {"model.safetensors": save(sd)})
        set_ref(repo_dir, "main", COMMITS[arch])
    return root


CHECK = r"""
import glob, json, sys
import timm, torch
from safetensors.torch import load_file
from sat.encoder import EncoderError, create_encoder
from timm.data import resolve_data_config

cases, weights_dir = json.loads(sys.argv[1]), sys.argv[2]
x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
out = {"cases": [], "errors": {}}
with torch.inference_mode():
    for arch, fm, k in cases:
        enc = create_encoder(f"timm:{arch}", feature_map=fm, finetune_blocks=k)
        got = enc.encode_tail(enc.encode_trunk(x))  # (B, L, D)
        # oracle: timm's own features_only net / forward_features, pretrained=True from the same cache
        if fm == "last" or arch.startswith("test_vit"):
            ref = timm.create_model(arch, pretrained=True).eval().forward_features(x)
            ref = ref[:, 1:] if ref.dim() == 3 else ref.flatten(2).transpose(1, 2)
        else:
            net = timm.create_model(arch, pretrained=True, features_only=True).eval()
            info = net.feature_info.get_dicts()
            i = int(fm) if fm.lstrip("-").isdigit() else max(j for j, f in enumerate(info) if f["reduction"] == int(fm[6:]))
            ref = net(x)[i].flatten(2).transpose(1, 2)
        # the weights the test wrote, loaded by hand: the encoder's came from the cache, not an init
        byhand = timm.create_model(arch, pretrained=False).eval()
        (path,) = glob.glob(f"{weights_dir}/models--timm--{arch}/snapshots/*/model.safetensors")
        byhand.load_state_dict(load_file(path))
        last = byhand.forward_features(x)
        random = timm.create_model(arch, pretrained=False).eval().forward_features(x)
        trunk_params = sum(p.numel() for p in enc.trunk.parameters())
        out["cases"].append({"arch": arch, "fm": fm, "k": k, "shape": list(got.shape), "grid": list(enc.grid(160)),
                             "diff": float((got - ref).abs().max()), "weights": enc.weights,
                             "tail_params": sum(p.numel() for p in enc.tail.parameters()),
                             "tail_trains": all(p.requires_grad for p in enc.tail.parameters()),
                             "trunk_frozen": not any(p.requires_grad for p in enc.trunk.parameters()),
                             "cache_vs_file": float((timm.create_model(arch, pretrained=True).eval().forward_features(x) - last).abs().max()),
                             "file_vs_random": float((last - random).abs().max()),
                             "data_config": {k2: list(v) if isinstance(v, tuple) else v for k2, v in enc.data_config.items()},
                             "timm_config": {k2: list(v) if isinstance(v, tuple) else v
                                             for k2, v in resolve_data_config({}, model=byhand).items()}})
for name in ("timm:test_nfnet.r160_in1k", "timm:test_resnet.no_such_tag", "timm:no_such_model"):
    try:
        create_encoder(name)
        out["errors"][name] = None
    except EncoderError as e:
        out["errors"][name] = str(e)
print(json.dumps(out))
"""

CASES = [
    ("test_efficientnet.r160_in1k", "stride16", 0), ("test_efficientnet.r160_in1k", "stride16", 2),
    ("test_efficientnet.r160_in1k", "last", 1), ("test_efficientnet.r160_in1k", "2", 0),
    ("test_resnet.r160_in1k", "stride16", 0), ("test_resnet.r160_in1k", "stride32", 2),
    ("test_resnet.r160_in1k", "last", 0),
    ("test_convnext.r160_in1k", "stride16", 2), ("test_convnext.r160_in1k", "-1", 1),
    ("test_vit.r160_in1k", "last", 0), ("test_vit.r160_in1k", "stride16", 0),
]


def test_timm_encoders_load_hub_weights_offline_and_split_like_timm(hub):
    proc = subprocess.run([sys.executable, "-c", CHECK, json.dumps(CASES), str(hub / "hub")], cwd=REPO,
                          env=offline_env(hub / "hub", hub / "home"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for case in got["cases"]:
        what = f"{case['arch']} {case['fm']} finetune {case['k']}"
        assert case["diff"] < 1e-4, what  # trunk → tail = timm's own feature map
        assert case["cache_vs_file"] == 0.0 and case["file_vs_random"] > 1e-3, what  # weights from the cache
        assert case["weights"] == f"hf:timm/{case['arch']}@{COMMITS[case['arch']]}", what
        assert case["data_config"] == case["timm_config"], what  # preprocessing from the pretrained config
        assert case["trunk_frozen"] and case["tail_trains"], what
        assert (case["tail_params"] > 0) == (case["k"] > 0), what
        assert case["shape"][1] == case["grid"][0] * case["grid"][1], what
    grids = {(c["arch"], c["fm"]): (tuple(c["grid"]), c["shape"][2]) for c in got["cases"]}
    assert grids[("test_efficientnet.r160_in1k", "stride16")] == ((10, 10), 48)
    assert grids[("test_resnet.r160_in1k", "stride32")] == ((5, 5), 96)
    assert grids[("test_vit.r160_in1k", "last")] == ((10, 10), 64)  # 100 patch tokens, class token dropped
    err = got["errors"]
    assert "encoder timm:test_nfnet.r160_in1k" in err["timm:test_nfnet.r160_in1k"]
    assert "not in the Hugging Face cache" in err["timm:test_nfnet.r160_in1k"]
    assert "HF_HUB_OFFLINE is set" in err["timm:test_nfnet.r160_in1k"]
    assert "no pretrained weights 'test_resnet.no_such_tag'" in err["timm:test_resnet.no_such_tag"]
    assert "unknown encoder 'timm:no_such_model'" in err["timm:no_such_model"]
    assert all("\n" not in e for e in err.values())


def test_fit_and_caption_with_a_hub_encoder_end_to_end(hub, tmp_path):
    """`python -m train fit --encoder timm:…` on tiny scenes, weights from the offline cache, then
    `python -m sat` on the weights folder it wrote; a backbone missing from the cache is one line."""
    env = offline_env(hub / "hub", hub / "home")
    common = ["--n-train", "64", "--n-val", "16", "--n-test", "16", "--epochs", "1", "--data-root",
              str(tmp_path / "scenes"), "--cache-dir", str(tmp_path / "cache"), "--min-freq", "1", "--batch-size", "32",
              "--embed-dim", "16", "--attention-dim", "16", "--decoder-dim", "32", "--beam-size", "1",
              "--val-images", "8", "--no-progress", "--device", "cpu"]
    fit = subprocess.run([sys.executable, "-m", "train", "fit", "--encoder", "timm:test_efficientnet.r160_in1k",
                          "--feature-map", "stride16", "--out", str(tmp_path / "w"), "--run-dir", str(tmp_path / "run"),
                          *common], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert ("encoder timm:test_efficientnet.r160_in1k: feature map stride16 → grid 10×10, D 48, preprocessing "
            "160 px crop (crop_pct 0.95), bicubic") in fit.stdout
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    assert (cfg["image_size"], cfg["crop_pct"], cfg["interpolation"], cfg["grid"], cfg["encoder_dim"]) == \
        (160, 0.95, "bicubic", [10, 10], 48)
    assert cfg["mean"] == [0.485, 0.456, 0.406] and cfg["std"] == [0.229, 0.224, 0.225]
    (meta,) = (tmp_path / "cache").glob("*/meta.json")
    assert json.loads(meta.read_text())["weights"] == \
        f"hf:timm/test_efficientnet.r160_in1k@{COMMITS['test_efficientnet.r160_in1k']}"
    image = next((tmp_path / "scenes" / "images").glob("*.jpg"))
    cap = subprocess.run([sys.executable, "-m", "sat", str(image), "--weights", str(tmp_path / "w"), "--json"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert cap.returncode == 0, cap.stderr[-3000:]
    rec = json.loads(cap.stdout.strip().splitlines()[-1])
    assert rec["tokens"] and len(rec["attention"]) == len(rec["tokens"])
    assert (len(rec["attention"][0]), len(rec["attention"][0][0])) == (10, 10)
    missing = subprocess.run([sys.executable, "-m", "train", "fit", "--encoder", "timm:test_nfnet.r160_in1k",
                              "--out", str(tmp_path / "w2"), *common], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("error: encoder timm:test_nfnet.r160_in1k: the pretrained weights")
    assert "Traceback" not in missing.stderr and missing.stderr.strip().count("\n") == 0
    assert not (tmp_path / "w2").exists()
