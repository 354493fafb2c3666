# Decode attention for a batch of sequences of different lengths (what `kvq serve` steps are):
# one FlashAttention-2 call per sequence (the runtime's fp16 path since 309ed35) against one
# varlen call over the padded pool with each row's used length (seqused_k), and one masked SDPA
# call (the path before). Prints the varlen op's schema in this PyTorch, each way's output
# against the per-row calls, and wall time per layer call (host-synchronized, median of 50).
# The pool is [rows, capacity, kv_heads, head_dim] so that rows * capacity is one token axis.
# Needs a CUDA PyTorch (the GPU machine has one):  python3 bench/flash_ragged.py
import time

import torch
import torch.nn.functional as F

SHAPES = (("wt2-llama-18m", 4, 2, 128, 1024), ("7B MHA", 32, 32, 128, 4096),
          ("7B GQA-8", 32, 8, 128, 4096))
ROWS = (8, 64)
REPS = 50


def median_ms(fn):
    fn()
    times = []
    for _ in range(REPS):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[REPS // 2]


def main():
    torch.manual_seed(0)
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    op = torch.ops.aten._flash_attention_forward.default
    print("schema:", op._schema, flush=True)
    for name, hq, hk, d, cap in SHAPES:
        for rows in ROWS:
            lens = torch.randint(cap // 8, cap, (rows,), dtype=torch.int32)
            pool_k = torch.randn(rows, cap, hk, d, dtype=torch.float16, device="cuda")
            pool_v = torch.randn_like(pool_k)
            q = torch.randn(rows, hq, d, dtype=torch.float16, device="cuda")
            g = hq // hk
            lens_l = lens.tolist()

            def per_row():  # the runtime's path: [1, hk, g, d] against [1, hk, n, d]
                outs = []
                for i, n in enumerate(lens_l):
                    qi = q[i].view(1, hk, g, d)
                    ki = pool_k[i, :n].transpose(0, 1).unsqueeze(0)
                    vi = pool_v[i, :n].transpose(0, 1).unsqueeze(0)
                    outs.append(torch.ops.aten._scaled_dot_product_flash_attention(qi, ki, vi)[0])
                return torch.cat(outs, 0).reshape(rows, hq, d)

            cu_q = torch.arange(rows + 1, dtype=torch.int32, device="cuda")
            cu_k = torch.arange(rows + 1, dtype=torch.int32, device="cuda") * cap
            used = lens.to("cuda")
            kf = pool_k.view(rows * cap, hk, d)
            vf = pool_v.view(rows * cap, hk, d)

            def varlen():
                return op(q, kf, vf, cu_q, cu_k, 1, cap, 0.0, False, False, seqused_k=used)[0]

            mask = (torch.arange(cap, device="cuda")[None, :] < used[:, None])[:, None, None, :]

            def masked():  # one SDPA call, [rows, hq, 1, d] against the whole capacity
                kk, vv = pool_k.transpose(1, 2), pool_v.transpose(1, 2)  # views
                return F.scaled_dot_product_attention(q[:, :, None], kk, vv, attn_mask=mask,
                                                      enable_gqa=g > 1)[:, :, 0]

            ref = per_row().float()
            line = f"{name:14s} rows {rows:3d} lengths {min(lens_l)}..{max(lens_l)}:"
            for label, fn in (("per-row flash", per_row), ("varlen", varlen), ("masked SDPA", masked)):
                try:
                    out = fn().float()
                    err = (out - ref).abs().max().item()
                    same = torch.equal(out, ref)
                    line += f" | {label} {median_ms(fn):.3f} ms (max |diff| {err:.2e}{', bitwise' if same else ''})"
                except RuntimeError as e:  # a backend or a signature this PyTorch lacks
                    line += f" | {label} failed: {str(e).splitlines()[0][:120]}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
