"""aver's pipeline: ingest, plan, extract, store, predict.

Same inputs -> same features and models on every x86-64 machine: torch, oneDNN and MKL pick their kernels by
instruction set (AVX-512, AVX2, ...) and each sums floats in another order (measured: other CNN weights after 5
training steps). AVX2, which every x86-64 server of the last decade has, is pinned here, on the first import of any
aver module, before torch loads (if torch is already loaded, its choice stands), and Ray and Beam workers inherit it
(docs/demo.md, "Same bytes on every machine"); the thread counts are pinned by params (pretrain, engine).
"""
import os
import platform

if platform.machine().lower() in ("x86_64", "amd64"):      # the names mean nothing to other processors
    for _var, _isa in {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}.items():
        os.environ.setdefault(_var, _isa)
