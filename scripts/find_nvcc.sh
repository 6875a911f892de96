#!/usr/bin/env bash
# Prints the path of the CUDA compiler: nvcc on PATH, else the toolkit's default place; nothing if neither.
nvcc=$(command -v nvcc || true)
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
echo "$nvcc"
