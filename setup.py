"""olharness: Long-Short Alignment trainer + lm-evaluation-harness plugin.

Install for development with `make demo` / `make test` (they set up .venv), or by hand:
    pip install torch==2.13.0
    DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed==0.19.8
    pip install -e .[dev]
"""
from setuptools import find_packages, setup

setup(
    name="olharness",
    version="0.1.0",
    description="Long-Short Alignment: train decoder/encoder-decoder/RNN LMs under every misalignment "
                "variant and score any checkpoint with lm-eval (LSM, LongBench-E, PPL by length)",
    python_requires=">=3.10",
    packages=find_packages(include=["trainer", "trainer.*", "olharness", "olharness.*"]),
    include_package_data=True,
    package_data={"olharness": ["longbench/data/*", "hf_template/*"]},
    # the task YAMLs live in the top-level tasks/ (found beside the package in a checkout or an
    # editable install, or through $OLH_TASKS_DIR)
    install_requires=[
        "torch>=2.1",            # `pip install torch==2.13.0` first: any other spec pulls CUDA wheels
        "deepspeed==0.19.8",
        "lm-eval==0.4.13",
        "sentencepiece>=0.2",
        "datasets>=2.16",
        "numpy",
        "safetensors",
        "tqdm",
        "matplotlib",
        "pyyaml",
        "pydantic>=2",           # grid spec schema (trainer/spec.py); DeepSpeed depends on it too
        "rouge==1.0.1",          # THUDM LongBench's ROUGE-L implementation
        "fuzzywuzzy==0.18.0",    # THUDM LongBench's code edit similarity (pure-Python SequenceMatcher backend)
        "transformers",
        "accelerate",            # lm-eval's `hf` model imports it
        "tensorboard",           # --report_to tensorboard (torch.utils.tensorboard)
    ],
    extras_require={"dev": ["pytest"]},
    entry_points={
        "console_scripts": [
            "olharness = olharness.cli:main",
            "olh-train = trainer.train:main",
            "olh-ablate = trainer.ablate:main",
            "olh-export-hf = olharness.export_hf:main",
        ],
        # lm-eval 0.4.13 ignores these (no plugin discovery); later versions may read them
        "lm_eval.models": ["ol = olharness.model:OLM", "hf-lsm = olharness.lsm:HFLSM",
                           "hf-mid = olharness.longbench.hf_mid:HFMidLM"],
        "lm_eval.tasks": ["olharness = olharness.registration:TASKS_DIR"],
    },
)
