"""The original AttnGAN cfg/*.yml files through ``--config`` (issue 12 A), and attnfast's own
birds/coco configs checked against them."""
import logging
from pathlib import Path

import pytest
import yaml

from attnfast import train as train_cli
from attnfast.config import DEFAULTS, ConfigError, load_config
from attnfast.config_original import convert_original_config, is_original_config

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"

# The original files (taoxugit/AttnGAN, code/cfg/), verbatim.
BIRD_ATTN2 = """CONFIG_NAME: 'attn2'

DATASET_NAME: 'birds'
DATA_DIR: '../data/birds'
GPU_ID: 0
WORKERS: 4


TREE:
    BRANCH_NUM: 3


TRAIN:
    FLAG: True
    NET_G: ''  # '../models/bird_AttnGAN2.pth'
    B_NET_D: True
    BATCH_SIZE: 20  # 22
    MAX_EPOCH: 600
    SNAPSHOT_INTERVAL: 50
    DISCRIMINATOR_LR: 0.0002
    GENERATOR_LR: 0.0002
    #
    NET_E: '../DAMSMencoders/bird/text_encoder200.pth'
    SMOOTH:
        GAMMA1: 4.0  # 1,2,5 good 4 best  10&100bad
        GAMMA2: 5.0
        GAMMA3: 10.0  # 10good 1&100bad
        LAMBDA: 5.0


GAN:
    DF_DIM: 64
    GF_DIM: 32
    Z_DIM: 100
    R_NUM: 2

TEXT:
    EMBEDDING_DIM: 256
    CAPTIONS_PER_IMAGE: 10
"""

COCO_ATTN2 = """CONFIG_NAME: 'glu-gan2'

DATASET_NAME: 'coco'
DATA_DIR: '../data/coco'
GPU_ID: 0
WORKERS: 4


TREE:
    BRANCH_NUM: 3


TRAIN:
    FLAG: True
    NET_G: ''  # '../models/coco_AttnGAN2.pth'
    B_NET_D: True
    BATCH_SIZE: 14  # 32
    MAX_EPOCH: 120
    SNAPSHOT_INTERVAL: 5
    DISCRIMINATOR_LR: 0.0002
    GENERATOR_LR: 0.0002
    #
    NET_E: '../DAMSMencoders/coco/text_encoder100.pth'
    SMOOTH:
        GAMMA1: 4.0  # 1,2,5 good 4 best  10&100bad
        GAMMA2: 5.0
        GAMMA3: 10.0  # 10good 1&100bad
        LAMBDA: 50.0


GAN:
    DF_DIM: 96
    GF_DIM: 48
    Z_DIM: 100
    R_NUM: 3

TEXT:
    EMBEDDING_DIM: 256
    CAPTIONS_PER_IMAGE: 5
    WORDS_NUM: 12
"""

DAMSM_BIRD = """CONFIG_NAME: 'DAMSM'

DATASET_NAME: 'birds'
DATA_DIR: '../data/birds'
GPU_ID: 0
WORKERS: 1


TREE:
    BRANCH_NUM: 1
    BASE_SIZE: 299


TRAIN:
    FLAG: True
    NET_E: ''  # '../DAMSMencoders/bird/text_encoder200.pth'
    BATCH_SIZE: 48
    MAX_EPOCH: 600
    SNAPSHOT_INTERVAL: 50
    ENCODER_LR: 0.002  # 0.0002best; 0.002good; scott: 0.0007 with 0.98decay
    RNN_GRAD_CLIP: 0.25
    SMOOTH:
        GAMMA1: 4.0  # 1,2,5 good 4 best  10&100bad
        GAMMA2: 5.0
        GAMMA3: 10.0  # 10good 1&100bad



TEXT:
    EMBEDDING_DIM: 256
    CAPTIONS_PER_IMAGE: 10
"""

DAMSM_COCO = """CONFIG_NAME: 'DAMSM'

DATASET_NAME: 'coco'
DATA_DIR: '../data/coco'
GPU_ID: 0
WORKERS: 1


TREE:
    BRANCH_NUM: 1
    BASE_SIZE: 299


TRAIN:
    FLAG: True
    NET_E: ''  # '../DAMSMencoders/coco/text_encoder100.pth'
    BATCH_SIZE: 48
    MAX_EPOCH: 600
    SNAPSHOT_INTERVAL: 5
    ENCODER_LR: 0.002  # 0.0002best; 0.002good
    RNN_GRAD_CLIP: 0.25
    SMOOTH:
        GAMMA1: 4.0  # 1,2,5 good 4 best  10&100bad
        GAMMA2: 5.0
        GAMMA3: 10.0  # 10good 1&100bad


TEXT:
    EMBEDDING_DIM: 256
    CAPTIONS_PER_IMAGE: 5
    WORDS_NUM: 15
"""

EVAL_BIRD = """CONFIG_NAME: 'attn2'

DATASET_NAME: 'birds'
DATA_DIR: '../data/birds'
GPU_ID: 3
WORKERS: 1

B_VALIDATION: False  # True  # False
TREE:
    BRANCH_NUM: 3


TRAIN:
    FLAG: False
    NET_G: '../models/bird_AttnGAN2.pth'
    B_NET_D: False
    BATCH_SIZE: 100
    NET_E: '../DAMSMencoders/bird/text_encoder200.pth'


GAN:
    DF_DIM: 64
    GF_DIM: 32
    Z_DIM: 100
    R_NUM: 2

TEXT:
    EMBEDDING_DIM: 256
    CAPTIONS_PER_IMAGE: 10
    WORDS_NUM: 25
"""


def write(tmp_path, text, name="cfg.yml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bird_attn2(tmp_path):
    config = load_config(write(tmp_path, BIRD_ATTN2))
    assert config["name"] == "attn2"
    assert config["dataset"] | {} == DEFAULTS["dataset"] | {
        "name": "birds", "data_dir": "../data/birds", "num_workers": 4, "captions_per_image": 10,
        "words_num": 18}
    model = config["model"]
    assert (model["branch_num"], model["gf_dim"], model["df_dim"], model["z_dim"],
            model["condition_dim"], model["r_num"], model["embedding_dim"]) == (3, 32, 64, 100, 100, 2, 256)
    assert model["image_encoder"] == "inception" and model["mask_mode"] == "attngan"
    assert model["rnn_type"] == "LSTM"
    gan = config["gan"]
    assert (gan["batch_size"], gan["g_lr"], gan["d_lr"], gan["lambda"]) == (20, 2e-4, 2e-4, 5.0)
    assert gan["steps"] == 600 * (8855 // 20) and config["train"]["checkpoint_every"] == 50 * 442
    damsm = config["damsm"]
    assert (damsm["gamma1"], damsm["gamma2"], damsm["gamma3"]) == (4.0, 5.0, 10.0)
    # DAMSM-only keys the GAN file does not set keep attnfast's values (not the original's 2e-4)
    assert damsm["lr"] == DEFAULTS["damsm"]["lr"] and damsm["batch_size"] == DEFAULTS["damsm"]["batch_size"]


def test_coco_attn2(tmp_path):
    config = load_config(write(tmp_path, COCO_ATTN2))
    model, gan, data = config["model"], config["gan"], config["dataset"]
    assert (model["gf_dim"], model["df_dim"], model["r_num"], model["branch_num"]) == (48, 96, 3, 3)
    assert (gan["batch_size"], gan["lambda"], gan["steps"]) == (14, 50.0, 120 * (82783 // 14))
    assert (data["name"], data["captions_per_image"], data["words_num"]) == ("coco", 5, 12)


@pytest.mark.parametrize("text, dataset, cpi, words, per_epoch", [
    (DAMSM_BIRD, "birds", 10, 18, 8855 // 48), (DAMSM_COCO, "coco", 5, 15, 82783 // 48)])
def test_damsm_files(tmp_path, text, dataset, cpi, words, per_epoch):
    config = load_config(write(tmp_path, text))
    damsm = config["damsm"]
    assert (damsm["batch_size"], damsm["lr"], damsm["rnn_grad_clip"], damsm["image_size"]) == \
        (48, 0.002, 0.25, 299)
    assert (damsm["gamma1"], damsm["gamma2"], damsm["gamma3"]) == (4.0, 5.0, 10.0)
    assert damsm["steps"] == 600 * per_epoch
    assert config["dataset"]["name"] == dataset and config["dataset"]["num_workers"] == 1
    assert (config["dataset"]["captions_per_image"], config["dataset"]["words_num"]) == (cpi, words)
    assert config["model"]["image_encoder"] == "inception"
    # GAN-only keys untouched by a DAMSM file
    assert config["gan"] == DEFAULTS["gan"]
    assert config["model"]["branch_num"] == DEFAULTS["model"]["branch_num"]


def test_keys_without_effect_are_accepted(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="attnfast.config"):
        config = load_config(write(tmp_path, EVAL_BIRD))
    assert config["gan"]["batch_size"] == 100 and config["dataset"]["words_num"] == 25
    assert "TRAIN.NET_G (--resume" in caplog.text and "TRAIN.NET_E (--damsm)" in caplog.text


def test_unknown_keys_are_refused_with_their_names(tmp_path):
    text = BIRD_ATTN2 + "FOO: 1\nB_EXTRA:\n    X: 2\n"
    text = text.replace("    R_NUM: 2\n", "    R_NUM: 2\n    ZLS_DIM: 7\n")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    for name in ("FOO", "B_EXTRA.X", "GAN.ZLS_DIM"):
        assert name in str(info.value)


@pytest.mark.parametrize("edit, message", [
    (("    R_NUM: 2\n", "    R_NUM: 2\n    B_DCGAN: True\n"), "G_DCGAN"),
    (("    R_NUM: 2\n", "    R_NUM: 2\n    B_ATTENTION: False\n"), "B_ATTENTION"),
    (("DATASET_NAME: 'birds'", "DATASET_NAME: 'flowers'"), "flowers"),
    (("BATCH_SIZE: 20", "BATCH_SIZE: 'twenty'"), "TRAIN.BATCH_SIZE"),
    (("GF_DIM: 32", "GF_DIM: 32.5"), "GAN.GF_DIM"),
    (("TEXT:\n", "TEXT: 3\nX:\n"), "TEXT"),
])
def test_values_attnfast_cannot_honour_are_refused(tmp_path, edit, message):
    assert edit[0] in BIRD_ATTN2
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, BIRD_ATTN2.replace(*edit)))


def test_detection_and_overrides(tmp_path):
    assert is_original_config(yaml.safe_load(BIRD_ATTN2))
    assert not is_original_config(yaml.safe_load((CONFIGS / "shapes.yaml").read_text()))
    assert not is_original_config({})
    # overrides apply after the conversion
    config = load_config(write(tmp_path, BIRD_ATTN2), ["dataset.data_dir=/data/birds", "gan.steps=7"])
    assert config["dataset"]["data_dir"] == "/data/birds" and config["gan"]["steps"] == 7
    # a mixed file is read as attnfast's format: its upper-case key is unknown there
    with pytest.raises(ConfigError, match="GPU_ID"):
        load_config(write(tmp_path, "name: x\nGPU_ID: 0\n"))
    assert convert_original_config({"CONFIG_NAME": ""})["name"] == "birds_gan"


def test_cli_accepts_an_original_file(tmp_path, capsys):
    path = write(tmp_path, BIRD_ATTN2.replace("'../data/birds'", f"'{tmp_path}/none'"))
    assert train_cli.main(["--config", str(path), "--stage", "damsm", "--out", str(tmp_path / "o"),
                           "--device", "cpu", "--no-progress"]) == 2
    assert "dataset.data_dir not found" in capsys.readouterr().err


@pytest.mark.parametrize("ours, damsm_text, gan_text", [
    ("birds.yaml", DAMSM_BIRD, BIRD_ATTN2), ("coco.yaml", DAMSM_COCO, COCO_ATTN2)])
def test_shipped_configs_have_the_papers_values(tmp_path, ours, damsm_text, gan_text):
    config = load_config(CONFIGS / ours)
    gan_ref = load_config(write(tmp_path, gan_text, "gan.yml"))
    damsm_ref = load_config(write(tmp_path, damsm_text, "damsm.yml"))
    for key in ("gf_dim", "df_dim", "z_dim", "condition_dim", "r_num", "branch_num", "embedding_dim",
                "rnn_type", "image_encoder", "word_dim", "b_jcu"):
        assert config["model"][key] == gan_ref["model"][key], key
    for key in ("batch_size", "g_lr", "d_lr", "lambda", "steps", "betas"):
        assert config["gan"][key] == gan_ref["gan"][key], key
    for key in ("batch_size", "lr", "rnn_grad_clip", "gamma1", "gamma2", "gamma3", "image_size"):
        assert config["damsm"][key] == damsm_ref["damsm"][key], key
    for key in ("name", "captions_per_image", "words_num"):
        assert config["dataset"][key] == gan_ref["dataset"][key], key
    assert config["train"]["checkpoint_every"] == gan_ref["train"]["checkpoint_every"]
    # DAMSM length: the released encoders' epochs (bird 200, coco 100) of the DAMSM files' batches
    per_epoch = damsm_ref["damsm"]["steps"] // 600
    assert config["damsm"]["steps"] == {"birds.yaml": 200, "coco.yaml": 100}[ours] * per_epoch
