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
    package_data={"olharness": ["longbench/data/*", "tasks/**/*"]},
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
        "rouge==1.0.1",          # THUDM LongBench's ROUGE-L implementation
        "fuzzywuzzy==0.18.0",    # THUDM LongBench's code edit similarity (pure-Python SequenceMatcher backend)
        "transformers",
    ],
    extras_require={"dev": ["pytest"]},
    entry_points={
        "console_scripts": [
            "olh-train = trainer.train:main",
        ],
    },
)
