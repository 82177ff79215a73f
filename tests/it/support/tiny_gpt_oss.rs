//! A tiny gpt-oss checkpoint, written from scratch: gpt-oss-20b's config keys and tensor names
//! (attention with sinks and a sliding-window layer, a router, MXFP4-packed experts, YaRN rope)
//! scaled down to 2 layers of width 64 with 4 experts, the o200k_harmony tokenizer built from the
//! `o200k_base.tiktoken` ranks plus the harmony special tokens, and a harmony chat template. About
//! 55 MB, most of it the 201,088-row embedding and output matrices.
//!
//! The weights are random except for a few rows that make the model follow a script: a hidden
//! model would answer noise, and noise cannot show that the analysis channel becomes the
//! rationale or that a "1" blocks. The script works like this: the output matrix reads the current
//! token (the embedding puts each scripted token on its own axis), and the sliding-window layer
//! (window 2, all attention scores 0) adds the mean of the last tokens on a second set of axes, so
//! the next token is a function of (previous, current). That is enough for a whole harmony answer,
//! `<|channel|>analysis<|message|>…<|end|><|start|>assistant<|channel|>final<|message|>…<|return|>`,
//! because the two places where the current token repeats (`<|channel|>`, `<|message|>`) follow
//! different tokens: the second header spells `assistant` as two tokens. Everything else (the
//! full-attention layer, the router and the experts) is random and small, so it runs through
//! mistral.rs's MXFP4 and sinks code without changing the answer.
//!
//! Used by tests/it/gpt_oss.rs and by `examples/tiny_gpt_oss.rs` (bench/model/gpu-check.sh).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

pub const VOCAB: usize = 201_088;
const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 16;
const INTERMEDIATE: usize = 64;
const EXPERTS: usize = 4;
const TOP_K: usize = 2;
const LAYERS: usize = 2;
const WINDOW: usize = 2;
/// Scripted tokens live on axes 0..SCRIPT_AXES of the residual stream and every other token on
/// OTHER_AXIS; the window's mean of those 32 axes goes on WINDOW_AXES..HIDDEN.
const SCRIPT_AXES: usize = 31;
const OTHER_AXIS: usize = SCRIPT_AXES;
const WINDOW_AXES: usize = 32;
const MXFP4_BLOCK: usize = 32;

/// The harmony special tokens of o200k_harmony (openai-harmony 0.0.8's list); the ids from
/// 200014 up to the vocabulary's end are `<|reserved_N|>`.
pub const SPECIALS: [(&str, u32); 16] = [
    ("<|startoftext|>", 199998),
    ("<|endoftext|>", 199999),
    ("<|reserved_200000|>", 200000),
    ("<|reserved_200001|>", 200001),
    ("<|return|>", 200002),
    ("<|constrain|>", 200003),
    ("<|reserved_200004|>", 200004),
    ("<|channel|>", 200005),
    ("<|start|>", 200006),
    ("<|end|>", 200007),
    ("<|message|>", 200008),
    ("<|reserved_200009|>", 200009),
    ("<|reserved_200010|>", 200010),
    ("<|reserved_200011|>", 200011),
    ("<|call|>", 200012),
    ("<|reserved_200013|>", 200013),
];
const RETURN: u32 = 200002;
const CHANNEL: u32 = 200005;
const START: u32 = 200006;
const END: u32 = 200007;
const MESSAGE: u32 = 200008;

/// o200k's pre-tokenisation pattern (openai-harmony 0.0.8, `O200kHarmony`).
const PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+(?!\S)",
    r"|\s+",
);

/// The harmony prompt as openai-harmony renders a conversation for completion (system message
/// with the default identity, knowledge cutoff, reasoning effort and required channels; the
/// chat's system message as the developer message's `# Instructions`; the user message; then
/// `<|start|>assistant`). tests/it/gpt_oss.rs checks the tokens against openai-harmony's.
const CHAT_TEMPLATE: &str = "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n\nReasoning: {{ reasoning_effort | default(\"medium\") }}\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>\
{%- for message in messages -%}\
{%- if message.role == \"system\" or message.role == \"developer\" -%}<|start|>developer<|message|># Instructions\n\n{{ message.content }}<|end|>\
{%- elif message.role == \"user\" -%}<|start|>user<|message|>{{ message.content }}<|end|>\
{%- elif message.role == \"assistant\" -%}<|start|>assistant<|channel|>final<|message|>{{ message.content }}<|end|>\
{%- endif -%}\
{%- endfor -%}\
{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}";

/// What the model answers, token by token: each entry must be one token of o200k_base. An empty
/// `analysis` skips the analysis message.
pub struct Script<'a> {
    pub analysis: &'a [&'a str],
    pub final_answer: &'a [&'a str],
}

/// The o200k_base ranks: `base64-token rank` per line.
pub fn read_tiktoken(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut tokens: Vec<Vec<u8>> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let (b64, rank) = line
            .split_once(' ')
            .ok_or_else(|| format!("{}:{}: not `token rank`", path.display(), n + 1))?;
        let rank: usize = rank
            .parse()
            .map_err(|_| format!("{}:{}: bad rank", path.display(), n + 1))?;
        if rank != tokens.len() {
            return Err(format!("{}:{}: ranks out of order", path.display(), n + 1));
        }
        tokens.push(
            base64_decode(b64)
                .ok_or_else(|| format!("{}:{}: bad base64", path.display(), n + 1))?,
        );
    }
    Ok(tokens)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// GPT-2's byte-to-character table, which byte-level BPE vocabularies are written in.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable =
            (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid")
        };
    }
    table
}

/// tokenizer.json for the `tokenizers` crate: the ranks as a byte-level BPE whose merges are
/// recovered from the ranks (each token splits, by BPE over lower ranks, into exactly two parts:
/// that pair is its merge), the harmony specials as added tokens.
pub fn tokenizer_json(tokens: &[Vec<u8>]) -> Result<String, String> {
    let chars = byte_chars();
    let spell = |b: &[u8]| -> String { b.iter().map(|&x| chars[x as usize]).collect() };
    let rank: HashMap<&[u8], usize> = tokens
        .iter()
        .enumerate()
        .map(|(r, t)| (t.as_slice(), r))
        .collect();
    let mut merges = Vec::new();
    for (r, t) in tokens.iter().enumerate() {
        if t.len() < 2 {
            continue;
        }
        let mut parts: Vec<&[u8]> = (0..t.len()).map(|i| &t[i..i + 1]).collect();
        loop {
            let best = (0..parts.len() - 1)
                .filter_map(|i| {
                    let joined = &t[offset(&parts, i, t)..offset(&parts, i + 2, t)];
                    rank.get(joined).filter(|&&jr| jr < r).map(|&jr| (jr, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let start = offset(&parts, i, t);
            let end = offset(&parts, i + 2, t);
            parts.splice(i..i + 2, [&t[start..end]]);
        }
        if parts.len() != 2 {
            return Err(format!(
                "token {r} does not split into one merge ({} parts)",
                parts.len()
            ));
        }
        merges.push(format!("{} {}", spell(parts[0]), spell(parts[1])));
    }
    let mut vocab = serde_json::Map::new();
    for (r, t) in tokens.iter().enumerate() {
        vocab.insert(spell(t), r.into());
    }
    let mut added = Vec::new();
    let named: HashMap<u32, &str> = SPECIALS.iter().map(|&(s, id)| (id, s)).collect();
    for id in tokens.len() as u32..VOCAB as u32 {
        let content = named
            .get(&id)
            .map(|s| s.to_string())
            .unwrap_or_else(|| format!("<|reserved_{id}|>"));
        added.push(serde_json::json!({
            "id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true,
        }));
    }
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            ],
        },
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    });
    serde_json::to_string(&json).map_err(|e| e.to_string())
}

/// Byte offset in `t` where part `i` starts (the parts tile `t`).
fn offset(parts: &[&[u8]], i: usize, t: &[u8]) -> usize {
    if i >= parts.len() {
        return t.len();
    }
    parts[i].as_ptr() as usize - t.as_ptr() as usize
}

/// xorshift64*: reproducible weights with no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-a, a].
    fn uniform(&mut self, a: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }
    fn noise(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(a)).collect()
    }
}

enum Data {
    Bf16(Vec<f32>),
    U8(Vec<u8>),
}

struct Safetensors {
    tensors: Vec<(String, Vec<usize>, Data)>,
}

impl Safetensors {
    fn bf16(&mut self, name: &str, shape: &[usize], v: Vec<f32>) {
        assert_eq!(shape.iter().product::<usize>(), v.len(), "{name}");
        self.tensors
            .push((name.into(), shape.to_vec(), Data::Bf16(v)));
    }
    fn u8(&mut self, name: &str, shape: &[usize], v: Vec<u8>) {
        assert_eq!(shape.iter().product::<usize>(), v.len(), "{name}");
        self.tensors
            .push((name.into(), shape.to_vec(), Data::U8(v)));
    }
    fn write(self, path: &Path) -> Result<(), String> {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut data = Vec::new();
        for (name, shape, d) in &self.tensors {
            let start = data.len();
            let dtype = match d {
                Data::Bf16(v) => {
                    for x in v {
                        data.extend_from_slice(&bf16_bits(*x).to_le_bytes());
                    }
                    "BF16"
                }
                Data::U8(v) => {
                    data.extend_from_slice(v);
                    "U8"
                }
            };
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let mut h = serde_json::to_string(&header).map_err(|e| e.to_string())?;
        while h.len() % 8 != 0 {
            h.push(' ');
        }
        let mut out = Vec::with_capacity(8 + h.len() + data.len());
        out.extend_from_slice(&(h.len() as u64).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&data);
        std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// f32 to bf16, rounding to nearest even.
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The answer as token ids, from `<|channel|>` (what the model generates after the prompt's
/// `<|start|>assistant`) to `<|return|>`, with the two header tokens before it.
fn script_ids(tokens: &[Vec<u8>], script: &Script) -> Result<Vec<u32>, String> {
    let rank: HashMap<&[u8], u32> = tokens
        .iter()
        .enumerate()
        .map(|(r, t)| (t.as_slice(), r as u32))
        .collect();
    let id = |s: &str| -> Result<u32, String> {
        rank.get(s.as_bytes())
            .copied()
            .ok_or_else(|| format!("{s:?} is not one token of o200k_base"))
    };
    let mut seq = vec![START, id("assistant")?];
    if !script.analysis.is_empty() {
        seq.extend([CHANNEL, id("analysis")?, MESSAGE]);
        for w in script.analysis {
            seq.push(id(w)?);
        }
        // The second header spells the role in two tokens, so the `<|channel|>` after it follows
        // another token than the first one did.
        seq.extend([END, START, id("ass")?, id("istant")?]);
    }
    seq.extend([CHANNEL, id("final")?, MESSAGE]);
    for w in script.final_answer {
        seq.push(id(w)?);
    }
    seq.push(RETURN);
    Ok(seq)
}

/// Writes the checkpoint into `dir` (created if missing): config.json, generation_config.json,
/// tokenizer.json, tokenizer_config.json, chat_template.jinja, model.safetensors and a copy of
/// `o200k_base.tiktoken` (which mistral.rs's harmony parser loads; guardgate points it there).
pub fn write(dir: &Path, tiktoken: &Path, script: &Script) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tokens = read_tiktoken(tiktoken)?;
    if tokens.len() != 199_998 {
        return Err(format!(
            "{}: {} ranks, o200k_base has 199,998",
            tiktoken.display(),
            tokens.len()
        ));
    }
    let seq = script_ids(&tokens, script)?;

    // Axis of each scripted token; (previous, current) -> next for every generated position.
    let mut axis: HashMap<u32, usize> = HashMap::new();
    for &t in &seq {
        let n = axis.len();
        axis.entry(t).or_insert(n);
    }
    if axis.len() > SCRIPT_AXES {
        return Err(format!(
            "the script uses {} distinct tokens, at most {SCRIPT_AXES}",
            axis.len()
        ));
    }
    let mut next_of: HashMap<u32, Vec<(u32, u32)>> = HashMap::new();
    for i in 1..seq.len() - 1 {
        next_of
            .entry(seq[i])
            .or_default()
            .push((seq[i - 1], seq[i + 1]));
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut st = Safetensors {
        tensors: Vec::new(),
    };

    let mut embed = rng.noise(VOCAB * HIDDEN, 0.002);
    for t in 0..VOCAB {
        let a = axis.get(&(t as u32)).copied().unwrap_or(OTHER_AXIS);
        embed[t * HIDDEN + a] += 1.0;
    }
    st.bf16("model.embed_tokens.weight", &[VOCAB, HIDDEN], embed);

    let mut lm_head = rng.noise(VOCAB * HIDDEN, 0.001);
    for (&cur, follows) in &next_of {
        let ambiguous = follows.iter().any(|&(_, n)| n != follows[0].1);
        for &(prev, next) in follows {
            lm_head[next as usize * HIDDEN + axis[&cur]] = 10.0;
            if ambiguous {
                // Which of the current token's successors: told apart by the previous token.
                if follows.iter().any(|&(p, n)| p == prev && n != next) {
                    return Err(
                        "the script repeats a (previous, current) pair with two successors".into(),
                    );
                }
                lm_head[next as usize * HIDDEN + WINDOW_AXES + axis[&prev]] = 10.0;
            }
        }
    }
    st.bf16("lm_head.weight", &[VOCAB, HIDDEN], lm_head);
    st.bf16("model.norm.weight", &[HIDDEN], vec![1.0; HIDDEN]);

    let q_out = HEADS * HEAD_DIM;
    let kv_out = KV_HEADS * HEAD_DIM;
    for layer in 0..LAYERS {
        let p = format!("model.layers.{layer}");
        st.bf16(
            &format!("{p}.input_layernorm.weight"),
            &[HIDDEN],
            vec![1.0; HIDDEN],
        );
        st.bf16(
            &format!("{p}.post_attention_layernorm.weight"),
            &[HIDDEN],
            vec![1.0; HIDDEN],
        );
        let a = format!("{p}.self_attn");
        if layer == 0 {
            // The sliding-window layer: scores all 0 (q = k = 0), so each position takes the mean
            // of the window's values; v copies the normalised scripted axes, o puts that mean on
            // the second set of axes (heads 0 and 2 read kv heads 0 and 1).
            st.bf16(
                &format!("{a}.q_proj.weight"),
                &[q_out, HIDDEN],
                vec![0.0; q_out * HIDDEN],
            );
            st.bf16(&format!("{a}.q_proj.bias"), &[q_out], vec![0.0; q_out]);
            st.bf16(
                &format!("{a}.k_proj.weight"),
                &[kv_out, HIDDEN],
                vec![0.0; kv_out * HIDDEN],
            );
            st.bf16(&format!("{a}.k_proj.bias"), &[kv_out], vec![0.0; kv_out]);
            let mut v = vec![0.0; kv_out * HIDDEN];
            for j in 0..kv_out {
                v[j * HIDDEN + j] = 1.0;
            }
            st.bf16(&format!("{a}.v_proj.weight"), &[kv_out, HIDDEN], v);
            st.bf16(&format!("{a}.v_proj.bias"), &[kv_out], vec![0.0; kv_out]);
            // The input norm scales a one-hot row to sqrt(HIDDEN): undo it.
            let scale = 1.0 / (HIDDEN as f32).sqrt();
            let mut o = vec![0.0; HIDDEN * q_out];
            for j in 0..HEAD_DIM {
                o[(WINDOW_AXES + j) * q_out + j] = scale;
                o[(WINDOW_AXES + HEAD_DIM + j) * q_out + 2 * HEAD_DIM + j] = scale;
            }
            st.bf16(&format!("{a}.o_proj.weight"), &[HIDDEN, q_out], o);
            st.bf16(&format!("{a}.o_proj.bias"), &[HIDDEN], vec![0.0; HIDDEN]);
            st.bf16(&format!("{a}.sinks"), &[HEADS], vec![-20.0; HEADS]);
        } else {
            st.bf16(
                &format!("{a}.q_proj.weight"),
                &[q_out, HIDDEN],
                rng.noise(q_out * HIDDEN, 0.1),
            );
            st.bf16(&format!("{a}.q_proj.bias"), &[q_out], rng.noise(q_out, 0.1));
            st.bf16(
                &format!("{a}.k_proj.weight"),
                &[kv_out, HIDDEN],
                rng.noise(kv_out * HIDDEN, 0.1),
            );
            st.bf16(
                &format!("{a}.k_proj.bias"),
                &[kv_out],
                rng.noise(kv_out, 0.1),
            );
            st.bf16(
                &format!("{a}.v_proj.weight"),
                &[kv_out, HIDDEN],
                rng.noise(kv_out * HIDDEN, 0.1),
            );
            st.bf16(
                &format!("{a}.v_proj.bias"),
                &[kv_out],
                rng.noise(kv_out, 0.1),
            );
            st.bf16(
                &format!("{a}.o_proj.weight"),
                &[HIDDEN, q_out],
                rng.noise(HIDDEN * q_out, 0.001),
            );
            st.bf16(
                &format!("{a}.o_proj.bias"),
                &[HIDDEN],
                rng.noise(HIDDEN, 0.001),
            );
            st.bf16(&format!("{a}.sinks"), &[HEADS], rng.noise(HEADS, 1.0));
        }
        let m = format!("{p}.mlp");
        st.bf16(
            &format!("{m}.router.weight"),
            &[EXPERTS, HIDDEN],
            rng.noise(EXPERTS * HIDDEN, 0.1),
        );
        st.bf16(
            &format!("{m}.router.bias"),
            &[EXPERTS],
            rng.noise(EXPERTS, 0.1),
        );
        // MXFP4: 32 FP4 values (16 bytes) per block and one E8M0 scale (2^(s-127)) per block.
        // Scales of 2^-10 and 2^-14 keep the experts' output ~1e-3: random, and too small to
        // change the scripted answer.
        for (name, out, inp, scale) in [
            ("gate_up_proj", 2 * INTERMEDIATE, HIDDEN, 117u8),
            ("down_proj", HIDDEN, INTERMEDIATE, 113u8),
        ] {
            let blocks = inp / MXFP4_BLOCK;
            let n = EXPERTS * out * blocks * 16;
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            st.u8(
                &format!("{m}.experts.{name}_blocks"),
                &[EXPERTS, out, blocks, 16],
                bytes,
            );
            st.u8(
                &format!("{m}.experts.{name}_scales"),
                &[EXPERTS, out, blocks],
                vec![scale; EXPERTS * out * blocks],
            );
            st.bf16(
                &format!("{m}.experts.{name}_bias"),
                &[EXPERTS, out],
                rng.noise(EXPERTS * out, 0.001),
            );
        }
    }
    st.write(&dir.join("model.safetensors"))?;

    let layer_types: Vec<&str> = (0..LAYERS)
        .map(|l| {
            if l % 2 == 0 {
                "sliding_attention"
            } else {
                "full_attention"
            }
        })
        .collect();
    let config = serde_json::json!({
        "architectures": ["GptOssForCausalLM"],
        "model_type": "gpt_oss",
        "attention_bias": true,
        "attention_dropout": 0.0,
        "eos_token_id": RETURN,
        "pad_token_id": 199999,
        "experts_per_token": TOP_K,
        "num_experts_per_tok": TOP_K,
        "num_local_experts": EXPERTS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "initial_context_length": 128,
        "initializer_range": 0.02,
        "layer_types": layer_types,
        "max_position_embeddings": 4096,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "output_router_logits": false,
        "quantization_config": {
            "quant_method": "mxfp4",
            "modules_to_not_convert": [
                "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"
            ],
        },
        "rms_norm_eps": 1e-5,
        "rope_scaling": {
            "rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 128,
            "beta_fast": 32.0, "beta_slow": 1.0, "truncate": false,
        },
        "rope_theta": 150000,
        "sliding_window": WINDOW,
        "swiglu_limit": 7.0,
        "tie_word_embeddings": false,
        "torch_dtype": "bfloat16",
        "use_cache": true,
        "vocab_size": VOCAB,
    });
    let files = [
        ("config.json", serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?),
        (
            "generation_config.json",
            serde_json::json!({"bos_token_id": 199998, "eos_token_id": [RETURN, 199999, 200012], "pad_token_id": 199999})
                .to_string(),
        ),
        (
            "tokenizer_config.json",
            serde_json::json!({
                "bos_token": "<|startoftext|>", "eos_token": "<|return|>", "pad_token": "<|endoftext|>",
                "model_max_length": 4096, "tokenizer_class": "PreTrainedTokenizerFast",
            })
            .to_string(),
        ),
        ("chat_template.jinja", CHAT_TEMPLATE.to_string()),
        ("tokenizer.json", tokenizer_json(&tokens)?),
    ];
    for (name, body) in files {
        std::fs::write(dir.join(name), body).map_err(|e| format!("{name}: {e}"))?;
    }
    std::fs::copy(tiktoken, dir.join("o200k_base.tiktoken"))
        .map_err(|e| format!("o200k_base.tiktoken: {e}"))?;
    let mut readme = String::new();
    let _ = writeln!(
        readme,
        "Tiny gpt-oss checkpoint written by guardgate's tests/it/support/tiny_gpt_oss.rs: random \
         weights plus a scripted answer; not a language model."
    );
    std::fs::write(dir.join("README.txt"), readme).map_err(|e| e.to_string())
}
