# Which SDPA backend LibTorch picks for the runtime's fp16 decode (one query per head, K/V narrowed
# from a pool of larger capacity, as TorchKvStore holds them), and at what speed, against
# contiguous copies and each backend forced. Needs a CUDA PyTorch (the GPU machine has one):
#   python3 bench/sdpa_strides.py   (bench/kernels_notes.md has its H100 output)
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HEADS, HEAD_DIM = 32, 128
BACKENDS = (("flash", SDPBackend.FLASH_ATTENTION), ("eff", SDPBackend.EFFICIENT_ATTENTION),
            ("cudnn", SDPBackend.CUDNN_ATTENTION))


def median_ms(fn, reps=20):
    """Median time of fn on the GPU over reps runs, after 3 untimed ones."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[reps // 2]


def row(dtype, n, cap):
    pool_k = torch.randn(1, HEADS, cap, HEAD_DIM, dtype=dtype, device="cuda")
    pool_v = torch.randn_like(pool_k)
    k, v = pool_k[:, :, :n], pool_v[:, :, :n]
    q = torch.randn(1, HEADS, 1, HEAD_DIM, dtype=dtype, device="cuda")
    cells = [f"{str(dtype)[6:]} n={n} cap={cap}"]
    for layout, kk, vv in (("strided", k, v), ("contig", k.contiguous(), v.contiguous())):
        attend = lambda: F.scaled_dot_product_attention(q, kk, vv)  # noqa: E731
        cells.append(f"{layout} default {median_ms(attend):.3f}")
        for name, backend in BACKENDS:
            try:
                with sdpa_kernel(backend):
                    cells.append(f"{name} {median_ms(attend):.3f}")
            except RuntimeError as ex:
                cells.append(f"{name} n/a ({str(ex)[:40]})")
    print(" | ".join(cells), flush=True)


def main():
    torch.manual_seed(0)
    print(torch.__version__, torch.cuda.get_device_name())
    for dtype in (torch.bfloat16, torch.float16):
        for n in (32768, 131072):
            for cap in (n + 10, n + 300000):
                row(dtype, n, cap)
                torch.cuda.empty_cache()
    # The kernels the default runs: strided bf16 K/V at 128K.
    n = 131072
    pool_k = torch.randn(1, HEADS, n + 10, HEAD_DIM, dtype=torch.bfloat16, device="cuda")
    pool_v = torch.randn_like(pool_k)
    q = torch.randn(1, HEADS, 1, HEAD_DIM, dtype=torch.bfloat16, device="cuda")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            F.scaled_dot_product_attention(q, pool_k[:, :, :n], pool_v[:, :, :n])
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=6))


if __name__ == "__main__":
    main()
