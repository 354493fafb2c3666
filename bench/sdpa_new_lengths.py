# What a decode step's attention costs when its key length is new at every call, as in
# generation (each step attends over one token more): LibTorch's SDPA with its own backend choice
# against each backend forced, wall time per call on the host (synchronized), fp16, one query per
# head. cuDNN's fused kernel builds an execution graph per shape it has not seen; this shows
# whether that happens at every step. Needs a CUDA PyTorch (the GPU machine has one):
#   python3 bench/sdpa_new_lengths.py   (bench/kernels_notes.md has its output)
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HEADS, HEAD_DIM, STEPS = 32, 128, 24
CHOICES = (("default", None), ("flash", SDPBackend.FLASH_ATTENTION),
           ("cudnn", SDPBackend.CUDNN_ATTENTION))


def steps_ms(start, choice, pool_k, pool_v, q):
    """Wall ms of each of STEPS calls at lengths start + 1, start + 2, ... (new every call)."""
    out = []
    for i in range(STEPS):
        n = start + 1 + i
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        if choice is None:
            F.scaled_dot_product_attention(q, pool_k[:, :, :n], pool_v[:, :, :n])
        else:
            with sdpa_kernel(choice):
                F.scaled_dot_product_attention(q, pool_k[:, :, :n], pool_v[:, :, :n])
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main():
    torch.manual_seed(0)
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    for start in (1000, 32768):
        cap = start + 4 * STEPS + 8
        pool_k = torch.randn(1, HEADS, cap, HEAD_DIM, dtype=torch.float16, device="cuda")
        pool_v = torch.randn_like(pool_k)
        q = torch.randn(1, HEADS, 1, HEAD_DIM, dtype=torch.float16, device="cuda")
        for name, choice in CHOICES:  # each backend's first use, untimed
            steps_ms(8, choice, pool_k, pool_v, q)
        for name, choice in CHOICES:
            # Each choice gets lengths no other choice has used, so no graph is reused.
            offset = STEPS * [c[0] for c in CHOICES].index(name)
            ms = steps_ms(start + offset, choice, pool_k, pool_v, q)
            again = steps_ms(start + offset, choice, pool_k, pool_v, q)  # the same lengths again
            print(f"n={start}+ {name:8s} new lengths: first {ms[0]:.2f} ms, median "
                  f"{sorted(ms)[STEPS // 2]:.3f}, max {max(ms):.2f} | same lengths again: median "
                  f"{sorted(again)[STEPS // 2]:.3f}", flush=True)


if __name__ == "__main__":
    main()
