"""Writes a random-weight Llama-architecture HF checkpoint (config.json + sharded BF16 safetensors
with its index) of any size, for tests of `spense prune` at shapes whose weights we do not have:
for instance a model larger than the GPU memory that the pruning run is given.

    python3 bench/tools/make_random_checkpoint.py OUT_DIR --hidden 4096 --intermediate 11008 \
        --layers 32 --heads 32 --kv-heads 8 --vocab 512 [--shard-gb 4] [--seed 0]

Weights are N(0, std^2) with std = 0.02 (norm weights 1), which keeps the residual stream of a
random model finite over many layers. Values come from one pool of random numbers, a window at a pseudo-random offset per
tensor: the test is about sizes and memory, and drawing billions of fresh normals would take
minutes. The directory is written under OUT_DIR.partial and renamed when complete. Needs numpy.
"""
import argparse, json, os, struct, sys
import numpy as np


def bf16_bytes(values):
    """float32 -> bfloat16 (round to nearest even), as raw little-endian bytes."""
    u = values.view(np.uint32)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16).tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('out')
    ap.add_argument('--hidden', type=int, required=True)
    ap.add_argument('--intermediate', type=int, required=True)
    ap.add_argument('--layers', type=int, required=True)
    ap.add_argument('--heads', type=int, required=True)
    ap.add_argument('--kv-heads', type=int, required=True)
    ap.add_argument('--vocab', type=int, required=True)
    ap.add_argument('--shard-gb', type=float, default=4.0)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    if os.path.exists(args.out):
        sys.exit(f'{args.out} exists; choose a new directory')
    d, f, hd = args.hidden, args.intermediate, args.hidden // args.heads
    if hd * args.heads != d or args.heads % args.kv_heads:
        sys.exit('hidden must be a multiple of heads, and heads a multiple of kv-heads')

    tensors = [('model.embed_tokens.weight', (args.vocab, d))]
    for l in range(args.layers):
        p = f'model.layers.{l}.'
        tensors += [(p + 'input_layernorm.weight', (d,)), (p + 'post_attention_layernorm.weight', (d,)),
                    (p + 'self_attn.q_proj.weight', (d, d)), (p + 'self_attn.k_proj.weight', (args.kv_heads * hd, d)),
                    (p + 'self_attn.v_proj.weight', (args.kv_heads * hd, d)), (p + 'self_attn.o_proj.weight', (d, d)),
                    (p + 'mlp.gate_proj.weight', (f, d)), (p + 'mlp.up_proj.weight', (f, d)),
                    (p + 'mlp.down_proj.weight', (d, f))]
    tensors += [('model.norm.weight', (d,)), ('lm_head.weight', (args.vocab, d))]

    rng = np.random.default_rng(args.seed)
    pool = np.frombuffer(bf16_bytes(rng.standard_normal(1 << 26, dtype=np.float32) * np.float32(0.02)), dtype=np.uint16)
    pool = np.concatenate([pool, pool])  # any window of len(pool) / 2 values is a slice
    ones = np.frombuffer(bf16_bytes(np.ones(max(args.hidden, 1), dtype=np.float32)), dtype=np.uint16)
    tmp = args.out + '.partial'
    os.makedirs(tmp)
    shards, current, size, limit = [], [], 0, int(args.shard_gb * 2**30)
    for name, shape in tensors:
        n = int(np.prod(shape)) * 2
        if current and size + n > limit:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += n
    shards.append(current)

    weight_map, total, offset_seed = {}, 0, 0
    for i, shard in enumerate(shards):
        fname = f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors'
        header, pos = {}, 0
        for name, shape in shard:
            n = int(np.prod(shape)) * 2
            header[name] = {'dtype': 'BF16', 'shape': list(shape), 'data_offsets': [pos, pos + n]}
            pos += n
            weight_map[name] = fname
        hb = json.dumps(header).encode()
        hb += b' ' * (-len(hb) % 8)
        with open(os.path.join(tmp, fname), 'wb') as out:
            out.write(struct.pack('<Q', len(hb)) + hb)
            for name, shape in shard:
                count = int(np.prod(shape))
                if name.endswith('norm.weight'):
                    out.write(ones[:count].tobytes())
                    continue
                half = len(pool) // 2
                for start in range(0, count, half):
                    m = min(half, count - start)
                    offset_seed = (offset_seed * 6364136223846793005 + 1442695040888963407) % 2**64
                    o = int(offset_seed >> 33) % half
                    out.write(pool[o:o + m].tobytes())
        total += pos
        print(f'{fname}: {pos / 2**30:.2f} GiB', flush=True)
    with open(os.path.join(tmp, 'model.safetensors.index.json'), 'w') as out:
        json.dump({'metadata': {'total_size': total}, 'weight_map': weight_map}, out)
    config = {'architectures': ['LlamaForCausalLM'], 'model_type': 'llama', 'hidden_size': d,
              'intermediate_size': f, 'num_hidden_layers': args.layers, 'num_attention_heads': args.heads,
              'num_key_value_heads': args.kv_heads, 'vocab_size': args.vocab, 'rms_norm_eps': 1e-5,
              'rope_theta': 10000.0, 'max_position_embeddings': 4096, 'tie_word_embeddings': False,
              'hidden_act': 'silu', 'torch_dtype': 'bfloat16'}
    with open(os.path.join(tmp, 'config.json'), 'w') as out:
        json.dump(config, out, indent=1)
    os.rename(tmp, args.out)
    params = total // 2
    print(f'{args.out}: {params / 1e9:.2f} B parameters, {total / 2**30:.2f} GiB in {len(shards)} shards')


if __name__ == '__main__':
    main()
