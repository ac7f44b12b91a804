"""Records held-out allocation traces: real workloads that gmlake was never tuned on.

Run on a GPU machine with PyTorch and transformers:

    OUT=<dir> [JOBS=n] python3 scripts/record_traces.py [--expandable] [WORKLOAD ...]

Each workload runs in its own process (`JOBS` at a time, default 1; each job's peak figures are
its own process's) under PyTorch's default caching allocator with
`torch.cuda.memory._record_memory_history`, and writes `<workload>.txt.gz` in the text format of
`traces/README.md` plus one line of `results.json` (PyTorch's own peak figures). With
`--expandable` it runs under `expandable_segments:True` instead, records no trace, and writes
`results-expandable.json`: the figures a trace's table row gives for expandable segments. With
`--gmlake=CONF` it runs under gmlake (`gmlake.enable(CONF, mode="cpp")`, the package importable,
e.g. from the wheel), records no trace, and writes `results-gmlake-<CONF>.json`: what gmlake
reserves live, to set beside its replay. Models are built
from published configurations with random weights (no download), as in `traces/record.py`, which
recorded the three traces in the repository; the workloads here are different models and jobs,
so that a policy chosen on those three can be checked on traces it was not fitted to.
"""
import json
import os
import subprocess
import sys
import time

OUT = os.environ["OUT"]

WORKER = r'''
import os, sys, json, random, gzip, torch
wl = sys.argv[1]
GMLAKE = os.environ.get("GMLAKE_RUN_CONF")
if GMLAKE is not None:  # gmlake as PyTorch's allocator (its C++ route), before CUDA starts
    import gmlake
    gmlake.enable(GMLAKE, mode="cpp")
torch.manual_seed(0); random.seed(0)
dev = "cuda"
RECORD = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "") == "" and GMLAKE is None
if RECORD:
    torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python", max_entries=5_000_000)

def lm_steps(m, opt, vocab, Ls, Bs, steps, amp=False, batch_first=False):
    # Language-model training steps on random tokens (labels = inputs), the sequence length and
    # batch drawn each step in the order the workload was recorded with; bf16 autocast if `amp`.
    for step in range(steps):
        if batch_first:
            B = random.choice(Bs); L = random.choice(Ls)
        else:
            L = random.choice(Ls); B = random.choice(Bs)
        x = torch.randint(0, vocab, (B, L), device=dev)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = m(input_ids=x, labels=x).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def bf16_sft(m, vocab, Ls, Bs, steps, **kw):
    # Full fine-tuning of the language model `m` in bf16 with AdamW (lr 1e-5): `lm_steps`.
    m = m.to(dev, torch.bfloat16)
    lm_steps(m, torch.optim.AdamW(m.parameters(), lr=1e-5), vocab, Ls, Bs, steps, **kw)

def token_steps(m, opt, vocab, Ls, tokens, steps):
    # Language-model training steps on random tokens with token-budget batching: a sequence
    # length drawn each step, the batch `tokens // length` (labels = inputs).
    for step in range(steps):
        L = random.choice(Ls)
        x = torch.randint(0, vocab, (tokens // L, L), device=dev)
        m(input_ids=x, labels=x).loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def gen_rounds(m, rounds, Bs, Ls, ns, tokens, **kw):
    # Generation rounds without gradients on random prompts: a batch, a prompt length and then a
    # number of new tokens (forced) drawn each round; token ids in `tokens` (low, high); `kw` to
    # `generate` (sampling or beams, special tokens).
    with torch.no_grad():
        for r in range(rounds):
            B = random.choice(Bs); L = random.choice(Ls)
            x = torch.randint(tokens[0], tokens[1], (B, L), device=dev)
            n = random.choice(ns)
            m.generate(input_ids=x, attention_mask=torch.ones_like(x), min_new_tokens=n, max_new_tokens=n, **kw)

def image_steps(loss_of, opt, Bs, Ss, steps, dtype, scaler=None, channels_last=False):
    # Image-classification training steps on random images (1000 classes), the batch and then the
    # size drawn each step in the order the workloads were recorded with; autocast to `dtype`,
    # a gradient scaler if given, channels_last inputs if asked. `loss_of(x, y)`: the model's loss.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for step in range(steps):
        B = random.choice(Bs); S = random.choice(Ss)
        x = torch.randn(B, 3, S, S, device=dev).contiguous(memory_format=fmt)
        y = torch.randint(0, 1000, (B,), device=dev)
        with torch.autocast("cuda", dtype=dtype):
            loss = loss_of(x, y)
        if scaler is None:
            loss.backward(); opt.step()
        else:
            scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
        opt.zero_grad(set_to_none=True)

def timm_steps(name, opt_of, Bs, Ss, steps, dtype, scaler=False, channels_last=False):
    # A timm classifier `name` (random weights, 1000 classes, channels_last if asked) trained by
    # `image_steps` on cross-entropy with the optimizer `opt_of(parameters)`, a GradScaler if
    # `scaler`.
    import timm
    m = timm.create_model(name, pretrained=False, num_classes=1000)
    m = m.to(dev, memory_format=torch.channels_last) if channels_last else m.to(dev)
    opt = opt_of(m.parameters())
    image_steps(lambda x, y: torch.nn.functional.cross_entropy(m(x), y), opt, Bs, Ss, steps, dtype, torch.amp.GradScaler() if scaler else None, channels_last)

def sgd(lr):
    # SGD with momentum 0.9 at learning rate `lr`, for `timm_steps`.
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9)

def bert_mlm():
    # BERT-large masked-LM pre-training, fp32 weights, bf16 autocast, AdamW.
    from transformers import BertConfig, BertForMaskedLM
    m = BertForMaskedLM(BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    lm_steps(m, opt, 30522, [128, 256, 384, 512], [8, 16, 24, 32], 10, amp=True)

def t5_train():
    # T5-base sequence-to-sequence training in bf16, varying source and target lengths.
    from transformers import T5Config, T5ForConditionalGeneration
    cfg = T5Config(d_model=768, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12, vocab_size=32128, decoder_start_token_id=0, pad_token_id=0)
    m = T5ForConditionalGeneration(cfg).to(dev, torch.bfloat16)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    for step in range(10):
        S = random.choice([128, 256, 512, 1024]); T = random.choice([32, 64, 128, 256]); B = random.choice([8, 16, 32])
        x = torch.randint(0, 32128, (B, S), device=dev); y = torch.randint(0, 32128, (B, T), device=dev)
        loss = m(input_ids=x, labels=y).loss; loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def gpt2m_ckpt():
    # GPT-2 medium with gradient checkpointing and bf16 autocast.
    from transformers import GPT2Config, GPT2LMHeadModel
    m = GPT2LMHeadModel(GPT2Config(n_layer=24, n_embd=1024, n_head=16)).to(dev)
    m.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    lm_steps(m, opt, 50257, [256, 512, 768, 1024], [4, 8, 16], 10, amp=True)

def llama_sft():
    # A 0.4B Llama-style model, full fine-tuning in bf16 with AdamW, long and varying sequences.
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=1536, intermediate_size=4096, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4, vocab_size=32000)
    bf16_sft(LlamaForCausalLM(cfg), 32000, [512, 1024, 1536, 2048], [2, 4, 8], 8)

def llama_beam():
    # Beam-search generation (4 beams: the KV cache is reordered every step).
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=4, vocab_size=32000)
    m = LlamaForCausalLM(cfg).to(dev, torch.bfloat16).eval()
    with torch.no_grad():
        for r in range(4):
            B = random.choice([1, 2, 4, 8]); L = random.choice([64, 128, 256, 512])
            x = torch.randint(0, 32000, (B, L), device=dev)
            m.generate(input_ids=x, max_new_tokens=random.choice([32, 64]), num_beams=4, do_sample=False, pad_token_id=0)

def vit_train():
    # ViT-base image classification training, fp32 weights, bf16 autocast, varying batch.
    from transformers import ViTConfig, ViTForImageClassification
    m = ViTForImageClassification(ViTConfig(image_size=224, patch_size=16, num_labels=1000)).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    for step in range(10):
        B = random.choice([32, 64, 96, 128])
        x = torch.randn(B, 3, 224, 224, device=dev); y = torch.randint(0, 1000, (B,), device=dev)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(pixel_values=x, labels=y).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def mixtral_moe():
    # A small mixture-of-experts model (8 experts, 2 per token): routing makes expert batch sizes,
    # hence tensor sizes, change with every step. bf16 weights, AdamW.
    from transformers import MixtralConfig, MixtralForCausalLM
    cfg = MixtralConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2, vocab_size=32000)
    bf16_sft(MixtralForCausalLM(cfg), 32000, [256, 512, 1024, 2048], [2, 4, 8], 10)

def roberta_cls():
    # RoBERTa-large sentence classification with dynamic padding, fp16 autocast with a gradient
    # scaler, and two micro-batches per optimizer step.
    from transformers import RobertaConfig, RobertaForSequenceClassification
    cfg = RobertaConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, vocab_size=50265, max_position_embeddings=514, num_labels=3)
    m = RobertaForSequenceClassification(cfg).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5); scaler = torch.amp.GradScaler()
    for step in range(8):
        for micro in range(2):
            L = random.choice([64, 128, 200, 320, 512]); B = random.choice([16, 32, 48])
            x = torch.randint(3, 50265, (B, L), device=dev); y = torch.randint(0, 3, (B,), device=dev)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = m(input_ids=x, labels=y).loss / 2
            scaler.scale(loss).backward()
        scaler.step(opt); scaler.update(); opt.zero_grad(set_to_none=True)

def whisper_train():
    # Whisper-small-sized speech-to-text training: fixed 30 s audio features, varying label lengths.
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    cfg = WhisperConfig(d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, vocab_size=51865, num_mel_bins=80, max_source_positions=1500, max_target_positions=448, decoder_start_token_id=50257, pad_token_id=50256)
    m = WhisperForConditionalGeneration(cfg).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    for step in range(8):
        B = random.choice([8, 16, 24]); T = random.choice([64, 128, 256, 440])
        x = torch.randn(B, 80, 3000, device=dev); y = torch.randint(0, 50000, (B, T), device=dev)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(input_features=x, labels=y).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def resnet_train():
    # ResNet-50 image classification, fp16 autocast with a gradient scaler, varying batch and
    # image size (multi-scale training).
    from transformers import ResNetConfig, ResNetForImageClassification
    cfg = ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck", num_labels=1000)
    m = ResNetForImageClassification(cfg).to(dev)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9); scaler = torch.amp.GradScaler()
    image_steps(lambda x, y: m(pixel_values=x, labels=y).loss, opt, [64, 128, 192], [160, 192, 224, 256], 10, torch.float16, scaler)

def neox_sample():
    # Sampled generation (top-p) with a 1B GPT-NeoX-style model: growing KV caches, varying
    # batch, prompt and output lengths.
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    cfg = GPTNeoXConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=16, intermediate_size=8192, vocab_size=50432)
    m = GPTNeoXForCausalLM(cfg).to(dev, torch.bfloat16).eval()
    with torch.no_grad():
        for r in range(5):
            B = random.choice([1, 4, 8, 16]); L = random.choice([32, 128, 512, 1024])
            x = torch.randint(0, 50000, (B, L), device=dev)
            m.generate(input_ids=x, max_new_tokens=random.choice([64, 128]), do_sample=True, top_p=0.9, pad_token_id=0)

def mistral_lora():
    # LoRA fine-tuning (peft, rank 16 on the attention projections) of a 1.1B Mistral-style model in
    # bf16 with gradient checkpointing.
    from transformers import MistralConfig, MistralForCausalLM
    from peft import LoraConfig, get_peft_model
    cfg = MistralConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=8, vocab_size=32000)
    m = MistralForCausalLM(cfg).to(dev, torch.bfloat16)
    m.gradient_checkpointing_enable(); m.enable_input_require_grads()
    m = get_peft_model(m, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    lm_steps(m, opt, 32000, [512, 1024, 2048, 3072], [2, 4, 8], 10)

def qwen_sft():
    # Full fine-tuning of a Qwen2-0.5B-style model (151,936-token vocabulary, so multi-GB logits)
    # in bf16 with AdamW.
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936)
    bf16_sft(Qwen2ForCausalLM(cfg), 151936, [512, 1024, 2048], [2, 4, 8], 8, batch_first=True)

def llama3_lora():
    # LoRA (peft, r 8 on q/v) of a 1.2B Llama-3-style model (128,256-token vocabulary) in bf16 with
    # gradient checkpointing and long sequences.
    from transformers import LlamaConfig, LlamaForCausalLM
    from peft import LoraConfig, get_peft_model
    cfg = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)
    m = LlamaForCausalLM(cfg).to(dev, torch.bfloat16)
    m.gradient_checkpointing_enable(); m.enable_input_require_grads()
    m = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    lm_steps(m, opt, 128256, [1024, 2048, 4096], [1, 2, 4], 8, batch_first=True)

def bloom_train():
    # BLOOM-560M-style training (250,880-token vocabulary) in bf16 with AdamW.
    from transformers import BloomConfig, BloomForCausalLM
    cfg = BloomConfig(hidden_size=1024, n_layer=24, n_head=16, vocab_size=250880)
    bf16_sft(BloomForCausalLM(cfg), 250880, [256, 512, 1024], [2, 4, 8], 8, batch_first=True)

def bart_train():
    # BART-large summarisation-style training, fp32 weights, fp16 autocast + GradScaler, AdamW.
    from transformers import BartConfig, BartForConditionalGeneration
    cfg = BartConfig(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, vocab_size=50265)
    m = BartForConditionalGeneration(cfg).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4); scaler = torch.amp.GradScaler()
    for step in range(8):
        B = random.choice([4, 8, 16]); S = random.choice([256, 512, 1024]); T = random.choice([64, 128, 256])
        x = torch.randint(0, 50265, (B, S), device=dev); y = torch.randint(0, 50265, (B, T), device=dev)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = m(input_ids=x, labels=y).loss
        scaler.scale(loss).backward(); scaler.step(opt); scaler.update(); opt.zero_grad(set_to_none=True)

def clip_train():
    # CLIP ViT-B/16 contrastive training (image and text towers), bf16 autocast, AdamW.
    from transformers import CLIPConfig, CLIPModel
    cfg = CLIPConfig(vision_config=dict(image_size=224, patch_size=16), text_config=dict(max_position_embeddings=77))
    m = CLIPModel(cfg).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    for step in range(10):
        B = random.choice([64, 128, 256]); T = random.choice([32, 77])
        px = torch.randn(B, 3, 224, 224, device=dev); ids = torch.randint(0, 49408, (B, T), device=dev)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(input_ids=ids, pixel_values=px, return_loss=True).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def convnext_train():
    # ConvNeXt-base image classification, bf16 autocast, AdamW, varying batch and image size.
    from transformers import ConvNextConfig, ConvNextForImageClassification
    cfg = ConvNextConfig(depths=[3, 3, 27, 3], hidden_sizes=[128, 256, 512, 1024], num_labels=1000)
    m = ConvNextForImageClassification(cfg).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    image_steps(lambda x, y: m(pixel_values=x, labels=y).loss, opt, [32, 64, 128], [192, 224, 256], 10, torch.bfloat16)

def gpt2_gen_var():
    # Greedy generation with a GPT-2-medium-sized model in fp16: batch 1-8, prompts of 16-512
    # tokens, 32-128 new tokens, a new size of KV cache every round (fourth set).
    from transformers import GPT2Config, GPT2LMHeadModel
    m = GPT2LMHeadModel(GPT2Config(n_layer=24, n_embd=1024, n_head=16)).to(dev, torch.float16).eval()
    with torch.no_grad():
        for r in range(8):
            B = random.choice([1, 2, 4, 8]); L = random.choice([16, 64, 128, 256, 512])
            x = torch.randint(0, 50257, (B, L), device=dev)
            m.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=random.choice([32, 64, 128]), do_sample=False, pad_token_id=0)

def bert_dynpad():
    # BERT-base sentence classification with dynamic padding (fourth set): each batch of 32
    # examples padded to its longest, lengths drawn from a long-tailed distribution (8-512 tokens,
    # rounded up to 8), bf16 autocast, AdamW, 25 steps: many distinct shapes.
    from transformers import BertConfig, BertForSequenceClassification
    m = BertForSequenceClassification(BertConfig(num_labels=2)).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-5)
    for step in range(25):
        lens = [min(512, max(8, int(random.lognormvariate(4.5, 0.7)))) for _ in range(32)]
        L = (max(lens) + 7) // 8 * 8
        x = torch.randint(1000, 30522, (32, L), device=dev)
        mask = (torch.arange(L, device=dev)[None, :] < torch.tensor(lens, device=dev)[:, None]).long()
        y = torch.randint(0, 2, (32,), device=dev)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(input_ids=x, attention_mask=mask, labels=y).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def vit_dynres():
    # ViT-base classification at a new resolution most steps (fourth set): 160-384 px in steps of
    # 32, position embeddings interpolated, batch 16-64, bf16 autocast, AdamW, 12 steps.
    from transformers import ViTConfig, ViTForImageClassification
    m = ViTForImageClassification(ViTConfig(image_size=224, num_labels=1000)).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    image_steps(lambda x, y: m(pixel_values=x, labels=y, interpolate_pos_encoding=True).loss, opt, [16, 32, 64], range(160, 385, 32), 12, torch.bfloat16)

def llama_packed():
    # Packed sequences (fifth set): a Llama-3-style 0.6B model with a 128,256-token vocabulary,
    # full fine-tuning in bf16 with AdamW, each step one row of 4,096-8,192 packed tokens (a new
    # total most steps, multi-GB logits), documents marked by restarting position ids, 12 steps.
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=1024, intermediate_size=3584, num_hidden_layers=12, num_attention_heads=16, num_key_value_heads=4, vocab_size=128256)
    m = LlamaForCausalLM(cfg).to(dev, torch.bfloat16)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    for step in range(12):
        L = random.choice(range(4096, 8193, 512))
        docs = []
        while sum(docs) < L:
            docs.append(min(L - sum(docs), random.choice([128, 256, 512, 1024, 2048])))
        pos = torch.cat([torch.arange(d) for d in docs]).to(dev)[None, :]
        x = torch.randint(0, 128256, (1, L), device=dev)
        loss = m(input_ids=x, position_ids=pos, labels=x).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def opt_accum():
    # OPT-350m-style causal LM (fifth set), fp32 weights, bf16 autocast, AdamW, two micro-batches
    # of different shapes per optimizer step (batch 4-16, seq 128-1024), 10 steps.
    from transformers import OPTConfig, OPTForCausalLM
    cfg = OPTConfig(hidden_size=1024, ffn_dim=4096, num_hidden_layers=24, num_attention_heads=16, word_embed_proj_dim=512, vocab_size=50272)
    m = OPTForCausalLM(cfg).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    for step in range(10):
        for micro in range(2):
            B = random.choice([4, 8, 16]); L = random.choice([128, 256, 512, 768, 1024])
            x = torch.randint(0, 50272, (B, L), device=dev)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = m(input_ids=x, labels=x).loss / 2
            loss.backward()
        opt.step(); opt.zero_grad(set_to_none=True)

def effnet_dynres():
    # EfficientNet-B3 (timm, random weights, fifth set), channels-last, bf16 autocast, AdamW, a new
    # batch (32-96) and resolution (224-320 px) most steps, 12 steps.
    timm_steps("efficientnet_b3", lambda p: torch.optim.AdamW(p, lr=1e-4), [32, 64, 96], range(224, 321, 32), 12, torch.bfloat16, channels_last=True)

def gemma_sft():
    # Gemma-style 0.4B with a 256,000-token vocabulary (sixth set), full fine-tuning in bf16,
    # AdamW, batch 1-4, seq 512-2048: multi-GB logits of a new size most steps, 8 steps.
    from transformers import GemmaConfig, GemmaForCausalLM
    cfg = GemmaConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=1, head_dim=128, vocab_size=256000)
    bf16_sft(GemmaForCausalLM(cfg), 256000, [512, 1024, 1536, 2048], [1, 2, 4], 8)

def phi_ckpt():
    # Phi-style 0.7B (sixth set), fp32 weights, bf16 autocast, gradient checkpointing, AdamW,
    # batch 2-8, seq 256-2048, 8 steps.
    from transformers import PhiConfig, PhiForCausalLM
    cfg = PhiConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=12, num_attention_heads=32, vocab_size=51200)
    m = PhiForCausalLM(cfg).to(dev)
    m.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    lm_steps(m, opt, 51200, [256, 512, 1024, 2048], [2, 4, 8], 8, amp=True)

def t5_beam():
    # T5-base generation with 4-beam search in bf16 (sixth set): batch 1-16, source 64-512 tokens,
    # 32-128 new tokens (forced), 6 rounds.
    from transformers import T5Config, T5ForConditionalGeneration
    m = T5ForConditionalGeneration(T5Config(d_model=768, d_ff=3072, num_layers=12, num_heads=12, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)).to(dev, torch.bfloat16).eval()
    with torch.no_grad():
        for r in range(6):
            B = random.choice([1, 4, 8, 16]); L = random.choice([64, 128, 256, 512])
            x = torch.randint(0, 32000, (B, L), device=dev)
            n = random.choice([32, 64, 128])
            m.generate(input_ids=x, attention_mask=torch.ones_like(x), num_beams=4, min_new_tokens=n, max_new_tokens=n, do_sample=False)

def deberta_dynpad():
    # DeBERTa-v2-base-style classification with dynamic padding (seventh set): relative-position
    # attention, each batch of 16-48 padded to its longest (lengths 16-512, long-tailed, rounded
    # up to 8), bf16 autocast, AdamW, 20 steps.
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification
    cfg = DebertaV2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab_size=128100, relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=-1, position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False, num_labels=3)
    m = DebertaV2ForSequenceClassification(cfg).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-5)
    for step in range(20):
        B = random.choice([16, 32, 48])
        lens = [min(512, max(16, int(random.lognormvariate(4.8, 0.6)))) for _ in range(B)]
        L = (max(lens) + 7) // 8 * 8
        x = torch.randint(1000, 128000, (B, L), device=dev)
        mask = (torch.arange(L, device=dev)[None, :] < torch.tensor(lens, device=dev)[:, None]).long()
        y = torch.randint(0, 3, (B,), device=dev)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(input_ids=x, attention_mask=mask, labels=y).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def densenet_dynres():
    # DenseNet-121 (timm, random weights, seventh set): concatenation-heavy activations, fp16
    # autocast + GradScaler, SGD with momentum, a new batch (32-128) and resolution (192-320 px)
    # most steps, 12 steps.
    timm_steps("densenet121", sgd(0.1), [32, 64, 96, 128], range(192, 321, 32), 12, torch.float16, scaler=True)

def qwen_gen_sample():
    # Sampled generation (top-k) with a Qwen2-0.5B-style model in bf16 (seventh set; 151,936-token
    # vocabulary, so large logits each step): batch 1-12, prompts of 32-768 tokens, 32-160 new
    # tokens (forced), 6 rounds.
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936)
    m = Qwen2ForCausalLM(cfg).to(dev, torch.bfloat16).eval()
    gen_rounds(m, 6, [1, 3, 6, 12], [32, 128, 384, 768], [32, 96, 160], (0, 151000), do_sample=True, top_k=50, pad_token_id=0)

def stablelm_fused():
    # StableLM-style 0.6B (partial rotary, seventh set), full fine-tuning in bf16 with fused AdamW
    # (one kernel over all parameters: other optimizer-state temporaries than foreach), batch 1-8,
    # seq 128-2048, 10 steps.
    from transformers import StableLmConfig, StableLmForCausalLM
    cfg = StableLmConfig(hidden_size=1280, intermediate_size=3584, num_hidden_layers=16, num_attention_heads=20, num_key_value_heads=20, vocab_size=50304)
    m = StableLmForCausalLM(cfg).to(dev, torch.bfloat16)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True)
    lm_steps(m, opt, 50304, [128, 256, 512, 1024, 1536, 2048], [1, 2, 4, 8], 10)

def falcon_sft():
    # Falcon-style 1.3B (new decoder architecture: grouped key/value heads, parallel attention and
    # MLP; eighth set), full fine-tuning in bf16, AdamW (foreach), batch 1-8, seq 128-2048, 10 steps.
    from transformers import FalconConfig, FalconForCausalLM
    cfg = FalconConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_kv_heads=8, new_decoder_architecture=True, vocab_size=65024)
    bf16_sft(FalconForCausalLM(cfg), 65024, [128, 384, 768, 1024, 1536, 2048], [1, 2, 4, 8], 10)

def regnet_dynres():
    # RegNetY-3.2GF (timm, random weights, eighth set): grouped convolutions and squeeze-excite,
    # channels_last, bf16 autocast, AdamW, a new batch (32-96) and resolution (160-288 px) most
    # steps, 12 steps.
    timm_steps("regnety_032", lambda p: torch.optim.AdamW(p, lr=1e-3), [32, 64, 96], range(160, 289, 32), 12, torch.bfloat16, channels_last=True)

def starcoder_gen():
    # Sampled generation (nucleus) with a GPTBigCode-style 350M model (multi-query attention, one
    # key/value head; eighth set) in fp16: batch 1-16, prompts of 64-1024 tokens, 32-192 new tokens
    # (forced), 6 rounds.
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM
    cfg = GPTBigCodeConfig(n_embd=1024, n_layer=24, n_head=16, multi_query=True, vocab_size=49152, n_positions=2048)
    m = GPTBigCodeForCausalLM(cfg).to(dev, torch.float16).eval()
    gen_rounds(m, 6, [1, 4, 8, 16], [64, 256, 512, 1024], [32, 96, 192], (0, 49000), do_sample=True, top_p=0.9, pad_token_id=0)

def qwen_moe_sft():
    # A Qwen2-MoE-style model (16 experts, 4 routed per token, a shared expert; eighth set),
    # fine-tuned in bf16 with AdamW, batch 1-8, seq 128-1024, 10 steps: expert inputs of a new
    # size every layer and step.
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM
    cfg = Qwen2MoeConfig(hidden_size=1024, num_hidden_layers=12, num_attention_heads=16, num_key_value_heads=4, intermediate_size=2816, moe_intermediate_size=512, shared_expert_intermediate_size=2048, num_experts=16, num_experts_per_tok=4, vocab_size=32000)
    bf16_sft(Qwen2MoeForCausalLM(cfg), 32000, [128, 256, 512, 768, 1024], [1, 2, 4, 8], 10)

def mpt_sft():
    # MPT-style 1.2B (ALiBi attention, no position embeddings; ninth set), full fine-tuning in
    # bf16, AdamW, batch 1-8, seq 128-2048, 10 steps.
    from transformers import MptConfig, MptForCausalLM
    cfg = MptConfig(d_model=2048, n_heads=16, n_layers=18, expansion_ratio=4, max_seq_len=2048, vocab_size=50432)
    bf16_sft(MptForCausalLM(cfg), 50432, [128, 256, 640, 1024, 1536, 2048], [1, 2, 4, 8], 10)

def resnext_dynres():
    # ResNeXt-50 32x4d (timm, random weights, ninth set): grouped convolutions, fp16 autocast +
    # GradScaler, SGD with momentum, a new batch (48-160) and resolution (176-320 px) most steps,
    # 12 steps.
    timm_steps("resnext50_32x4d", sgd(0.1), [48, 96, 128, 160], range(176, 321, 48), 12, torch.float16, scaler=True)

def gptneo_gen():
    # Sampled generation (temperature, repetition penalty) with a GPT-Neo-style 350M model in fp16
    # (local and global attention layers; ninth set): batch 1-24, prompts of 32-1024 tokens, 16-160
    # new tokens (forced), 8 rounds.
    from transformers import GPTNeoConfig, GPTNeoForCausalLM
    cfg = GPTNeoConfig(hidden_size=1024, num_layers=24, num_heads=16, attention_types=[[["global", "local"], 12]], window_size=256, max_position_embeddings=2048, vocab_size=50257)
    m = GPTNeoForCausalLM(cfg).to(dev, torch.float16).eval()
    gen_rounds(m, 8, [1, 6, 12, 24], [32, 256, 512, 1024], [16, 64, 160], (0, 50000), do_sample=True, temperature=0.8, repetition_penalty=1.1, pad_token_id=0)

def llama_dpo():
    # DPO-style preference tuning (ninth set): a Llama-style 0.5B policy in bf16 with AdamW and a
    # frozen copy as reference; each step a chosen and a rejected batch of different lengths
    # (128-1536 tokens, batch 2-8) through both models, the reference without gradients, 10 steps.
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=20, num_attention_heads=16, num_key_value_heads=4, vocab_size=32000)
    pol = LlamaForCausalLM(cfg).to(dev, torch.bfloat16)
    ref = LlamaForCausalLM(cfg).to(dev, torch.bfloat16).eval()
    opt = torch.optim.AdamW(pol.parameters(), lr=1e-6)
    def logp(m, x):
        lp = torch.log_softmax(m(input_ids=x).logits[:, :-1].float(), -1)
        return lp.gather(-1, x[:, 1:, None]).squeeze(-1).sum(-1)
    for step in range(10):
        B = random.choice([2, 4, 8])
        xc = torch.randint(0, 32000, (B, random.choice([128, 384, 768, 1536])), device=dev)
        xr = torch.randint(0, 32000, (B, random.choice([128, 384, 768, 1536])), device=dev)
        with torch.no_grad():
            rc, rr = logp(ref, xc), logp(ref, xr)
        loss = -torch.nn.functional.logsigmoid(0.1 * ((logp(pol, xc) - rc) - (logp(pol, xr) - rr))).mean()
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def pythia_sft():
    # GPT-NeoX-style 2.8B (Pythia-2.8B's shape; tenth set), full fine-tuning in bf16 with AdamW,
    # batch 4-12, seq 512-2048, 8 steps: a job past 40% of the H200, where memory counts as short.
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    cfg = GPTNeoXConfig(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32, intermediate_size=10240, vocab_size=50304, max_position_embeddings=2048)
    bf16_sft(GPTNeoXForCausalLM(cfg), 50304, [512, 1024, 1536, 2048], [4, 8, 12], 8)

def vgg_dynres():
    # VGG-16 with batch norm (timm, random weights, tenth set): plain convolutions with large
    # activations and a large classifier, bf16 autocast, SGD with momentum, a new batch (16-64)
    # and resolution (160-288 px) most steps, 12 steps.
    timm_steps("vgg16_bn", sgd(0.01), [16, 32, 48, 64], range(160, 289, 32), 12, torch.bfloat16)

def bart_gen_sample():
    # Sampled generation (top-k) with a BART-large-style encoder-decoder in fp16 (tenth set):
    # batch 1-16, sources of 64-1024 tokens, 16-128 new tokens (forced), 6 rounds.
    from transformers import BartConfig, BartForConditionalGeneration
    cfg = BartConfig(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, vocab_size=50265, max_position_embeddings=1024)
    m = BartForConditionalGeneration(cfg).to(dev, torch.float16).eval()
    gen_rounds(m, 6, [1, 4, 8, 16], [64, 256, 512, 1024], [16, 64, 128], (4, 50000), do_sample=True, top_k=40, decoder_start_token_id=2, pad_token_id=1)

def gemma2_lora(Ls=(256, 512, 1024, 2048), Bs=(1, 2, 4, 8)):
    # LoRA (peft, rank 16 on attention and MLP projections) on a Gemma-2-style 2.6B model in bf16
    # (sliding-window and global layers alternating, logit soft-capping; tenth set), AdamW, batch
    # 1-8, seq 256-2048 (or the lengths `Ls` and batches `Bs` given), 10 steps.
    from transformers import Gemma2Config, Gemma2ForCausalLM
    from peft import LoraConfig, get_peft_model
    cfg = Gemma2Config(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=256000, sliding_window=1024)
    m = Gemma2ForCausalLM(cfg).to(dev, torch.bfloat16)
    m = get_peft_model(m, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    lm_steps(m, opt, 256000, list(Ls), list(Bs), 10)

def mistral_tokens():
    # A Mistral-style 1.1B (sliding-window attention; eleventh set), full fine-tuning in bf16 with
    # AdamW, each step about 8k tokens: a sequence length of 128-2048 drawn, batch 8192 // length,
    # 12 steps (token-budget batching: the batch shrinks as sequences grow).
    from transformers import MistralConfig, MistralForCausalLM
    cfg = MistralConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=8, vocab_size=32000, sliding_window=1024)
    m = MistralForCausalLM(cfg).to(dev, torch.bfloat16)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    token_steps(m, opt, 32000, [128, 256, 384, 640, 1024, 1536, 2048], 8192, 12)

def mobilenet_dynres():
    # MobileNetV3-Large (timm, random weights, eleventh set): depthwise convolutions, many small
    # tensors, bf16 autocast, channels_last, SGD with momentum, a new batch (64-256) and resolution
    # (160-320 px) most steps, 12 steps.
    timm_steps("mobilenetv3_large_100", sgd(0.1), [64, 128, 192, 256], range(160, 321, 32), 12, torch.bfloat16, channels_last=True)

def phi3_gen():
    # Sampled generation (top-p) with a Phi-3-mini-style 3.8B decoder in fp16 (eleventh set):
    # batch 1-32, prompts of 64-1024 tokens, 32-192 new tokens (forced), 6 rounds.
    from transformers import Phi3Config, Phi3ForCausalLM
    cfg = Phi3Config(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096)
    m = Phi3ForCausalLM(cfg).to(dev, torch.float16).eval()
    gen_rounds(m, 6, [1, 8, 16, 32], [64, 256, 512, 1024], [32, 96, 192], (0, 32000), do_sample=True, top_p=0.9, pad_token_id=0)

def gemma2_lora4():
    # gemma2_lora (tenth set) at a size an H200 holds (eleventh set): batch 1-4, seq 256-1024.
    gemma2_lora((256, 512, 768, 1024), (1, 2, 4))

def qwen2_tokens():
    # A Qwen2-style 1.5B (151,936-token vocabulary; twelfth set), full fine-tuning in bf16 with
    # AdamW, each step 16k tokens: a sequence length of 256-4096 drawn, batch 16384 // length,
    # 10 steps (token-budget batching with multi-GB logits).
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, vocab_size=151936)
    m = Qwen2ForCausalLM(cfg).to(dev, torch.bfloat16)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    token_steps(m, opt, 151936, [256, 512, 1024, 2048, 4096], 16384, 10)

def dla_dynres():
    # DLA-60 (timm, random weights, twelfth set): deep layer aggregation (concatenating nodes),
    # fp16 autocast + GradScaler, SGD with momentum, a new batch (32-128) and resolution (160-320
    # px) most steps, 12 steps.
    timm_steps("dla60", sgd(0.1), [32, 64, 96, 128], range(160, 321, 32), 12, torch.float16, scaler=True)

def opt_beam():
    # Beam search (4 beams) with an OPT-2.7B-style decoder in fp16 (twelfth set): batch 1-8,
    # prompts of 32-512 tokens, 32-128 new tokens (forced), 6 rounds: caches reordered every token.
    from transformers import OPTConfig, OPTForCausalLM
    cfg = OPTConfig(hidden_size=2560, num_hidden_layers=32, ffn_dim=10240, num_attention_heads=32, vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=2560)
    m = OPTForCausalLM(cfg).to(dev, torch.float16).eval()
    gen_rounds(m, 6, [1, 2, 4, 8], [32, 128, 256, 512], [32, 64, 128], (4, 50000), num_beams=4, do_sample=False, pad_token_id=1)

def wav2vec2_dynlen():
    # Speech recognition fine-tuning (twelfth set): a Wav2Vec2-base-style model with CTC, fp32
    # weights, bf16 autocast, AdamW, batches of 4-16 clips of 2-16 s at 16 kHz, 12 steps: a
    # convolutional feature encoder over raw audio, then a transformer, at a new length each step.
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC
    cfg = Wav2Vec2Config(vocab_size=32, ctc_zero_infinity=True)
    m = Wav2Vec2ForCTC(cfg).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    for step in range(12):
        B = random.choice([4, 8, 12, 16]); T = 16000 * random.choice([2, 4, 6, 10, 16])
        x = torch.randn(B, T, device=dev)
        y = torch.randint(1, 32, (B, T // 1600), device=dev)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(input_values=x, labels=y).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def llama3b_sft():
    # A Llama-3-style 3.2B (128,256-token vocabulary; thirteenth set), full fine-tuning in bf16
    # with AdamW, batch 2-8, seq 512-2048, 8 steps: a job past 40% of the H200.
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=3072, intermediate_size=8192, num_hidden_layers=26, num_attention_heads=24, num_key_value_heads=8, vocab_size=128256)
    bf16_sft(LlamaForCausalLM(cfg), 128256, [512, 1024, 1536, 2048], [2, 4, 8], 8)

def t5large_dynpad():
    # T5-large-style seq2seq fine-tuning in bf16 with AdamW (thirteenth set): each batch (8-32)
    # padded to its longest source, drawn from a long-tailed length distribution (64-1024), and
    # targets of 16-256 tokens, 12 steps.
    from transformers import T5Config, T5ForConditionalGeneration
    cfg = T5Config(d_model=1024, d_ff=2816, num_layers=24, num_decoder_layers=24, num_heads=16, d_kv=64, vocab_size=32128, feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0)
    m = T5ForConditionalGeneration(cfg).to(dev, torch.bfloat16)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    for step in range(12):
        B = random.choice([8, 16, 32])
        S = max(max(min(int(random.lognormvariate(5.3, 0.6)), 1024), 64) for _ in range(B))
        T = random.choice([16, 64, 128, 256])
        x = torch.randint(0, 32000, (B, S), device=dev); y = torch.randint(0, 32000, (B, T), device=dev)
        m(input_ids=x, labels=y).loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def gemma_gen_long():
    # Sampled generation (top-k) with a Gemma-style 2B decoder in bf16 (256,000-token vocabulary;
    # thirteenth set): batch 2-16, long prompts of 1024-4096 tokens, 32-128 new tokens (forced),
    # 6 rounds: multi-GB key/value caches of a new size every round.
    from transformers import GemmaConfig, GemmaForCausalLM
    cfg = GemmaConfig(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1, head_dim=256, vocab_size=256000, max_position_embeddings=8192)
    m = GemmaForCausalLM(cfg).to(dev, torch.bfloat16).eval()
    gen_rounds(m, 6, [2, 4, 8, 16], [1024, 2048, 3072, 4096], [32, 64, 128], (0, 250000), do_sample=True, top_k=50, pad_token_id=0)

def inception_dynres():
    # Inception-v3 (timm, random weights, thirteenth set): parallel branches of mixed kernel
    # sizes, fp16 autocast + GradScaler, SGD with momentum, a new batch (32-128) and resolution
    # (224-384 px) most steps, 12 steps.
    timm_steps("inception_v3", sgd(0.1), [32, 64, 96, 128], range(224, 385, 32), 12, torch.float16, scaler=True)

def res2net_dynres():
    # Res2Net-50 26w4s (timm, random weights, fourteenth set): multi-scale splits inside each
    # block, bf16 autocast, channels_last, SGD with momentum, a new batch (32-128) and resolution
    # (160-320 px) most steps, 16 steps.
    timm_steps("res2net50_26w_4s", sgd(0.1), [32, 64, 96, 128], range(160, 321, 32), 16, torch.bfloat16, channels_last=True)

def electra_dynpad():
    # ELECTRA-large-style classification (fourteenth set), fp32 weights, bf16 autocast, AdamW,
    # dynamic padding: each batch (16-64) padded to its longest length drawn from a long-tailed
    # distribution (32-512), 20 steps.
    from transformers import ElectraConfig, ElectraForSequenceClassification
    cfg = ElectraConfig(embedding_size=1024, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, vocab_size=30522, num_labels=3)
    m = ElectraForSequenceClassification(cfg).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    for step in range(20):
        B = random.choice([16, 32, 48, 64])
        S = max(max(min(int(random.lognormvariate(4.6, 0.7)), 512), 32) for _ in range(B))
        x = torch.randint(0, 30522, (B, S), device=dev); y = torch.randint(0, 3, (B,), device=dev)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(input_ids=x, labels=y).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def mistral_gen():
    # Greedy generation with a Mistral-style 1.1B (sliding-window attention) in fp16 (fourteenth
    # set): batch 1-32, prompts of 128-2048 tokens, 32-256 new tokens (forced), 8 rounds.
    from transformers import MistralConfig, MistralForCausalLM
    cfg = MistralConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=8, vocab_size=32000, sliding_window=1024)
    m = MistralForCausalLM(cfg).to(dev, torch.float16).eval()
    gen_rounds(m, 8, [1, 8, 16, 32], [128, 512, 1024, 2048], [32, 128, 256], (0, 32000), do_sample=False, pad_token_id=0)

def gptj_sft():
    # A GPT-J-style 1.3B (rotary on part of each head, attention and MLP in parallel; fourteenth
    # set), full fine-tuning in bf16 with AdamW, batch 1-8, seq 256-2048, 12 steps.
    from transformers import GPTJConfig, GPTJForCausalLM
    cfg = GPTJConfig(n_embd=2048, n_layer=24, n_head=16, rotary_dim=64, vocab_size=50400, n_positions=2048)
    bf16_sft(GPTJForCausalLM(cfg), 50400, [256, 512, 1024, 1536, 2048], [1, 2, 4, 8], 12)

globals()[wl]()
torch.cuda.synchronize()
s = torch.cuda.memory_stats()
res = {k: s.get(k) for k in ["active_bytes.all.peak", "reserved_bytes.all.peak", "num_alloc_retries", "num_ooms", "segment.all.allocated"]}
res["utilization"] = s["active_bytes.all.peak"] / s["reserved_bytes.all.peak"]
if RECORD:
    tr = torch.cuda.memory._snapshot()["device_traces"][0]
    with gzip.open(os.path.join(os.environ["OUT"], f"{wl}.txt.gz"), "wt") as f:
        f.write("# action addr size stream\n")
        for e in tr:
            f.write(f"{e['action']} {e.get('addr', 0)} {e.get('size', 0)} {e.get('stream', 0)}\n")
    res["trace_events"] = len(tr)
print("RESULT", json.dumps(res))
'''

# The workloads of traces/held-out/, in the sets that traces/held-out/README.md describes (three
# of six, the third with vocabularies of 128-251 thousand tokens, so multi-GB logits; a fourth of
# dynamic shapes: generation, dynamic padding, dynamic resolution; a fifth: packed sequences,
# gradient accumulation over micro-batches of different shapes, a timm CNN at dynamic resolution;
# a sixth: a 256,000-token vocabulary, gradient checkpointing over fp32 weights, beam search in a
# seq2seq model; a seventh: dynamic padding with relative-position attention, a DenseNet at dynamic
# resolution, sampled generation with a 151,936-token vocabulary, fused AdamW; an eighth: a
# Falcon-style decoder, a RegNet at dynamic resolution, multi-query sampled generation, a
# mixture of experts with a shared expert; a ninth: ALiBi attention, grouped convolutions at
# dynamic resolution, sampled generation with local attention, two models a step (DPO); a tenth:
# a job past 40% of the GPU, plain convolutions at dynamic resolution, encoder-decoder sampling,
# LoRA on sliding-window attention); an eleventh: token-budget batching, depthwise convolutions
# at dynamic resolution, sampled generation with a 3.8B decoder, the tenth set's LoRA at a size
# an H200 holds; a twelfth: token-budget batching with a 151,936-token vocabulary, deep layer
# aggregation at dynamic resolution, beam search in a decoder-only model, speech at new lengths; a
# thirteenth: a 3.2B full fine-tune past 40% of the GPU, seq2seq with dynamic padding, generation
# from long prompts, mixed-kernel branches at dynamic resolution; a fourteenth: multi-scale splits at
# dynamic resolution, dynamic padding with a large encoder, greedy generation with sliding-window
# attention, a parallel-block decoder's full fine-tune).
WORKLOADS = ["bert_mlm", "t5_train", "gpt2m_ckpt", "llama_sft", "llama_beam", "vit_train",
             "mixtral_moe", "roberta_cls", "whisper_train", "resnet_train", "neox_sample",
             "mistral_lora",
             "qwen_sft", "llama3_lora", "bloom_train", "bart_train", "clip_train", "convnext_train",
             "gpt2_gen_var", "bert_dynpad", "vit_dynres", "llama_packed", "opt_accum", "effnet_dynres",
             "gemma_sft", "phi_ckpt", "t5_beam",
             "deberta_dynpad", "densenet_dynres", "qwen_gen_sample", "stablelm_fused",
             "falcon_sft", "regnet_dynres", "starcoder_gen", "qwen_moe_sft",
             "mpt_sft", "resnext_dynres", "gptneo_gen", "llama_dpo",
             "pythia_sft", "vgg_dynres", "bart_gen_sample", "gemma2_lora",
             "mistral_tokens", "mobilenet_dynres", "phi3_gen", "gemma2_lora4",
             "qwen2_tokens", "dla_dynres", "opt_beam", "wav2vec2_dynlen",
             "llama3b_sft", "t5large_dynpad", "gemma_gen_long", "inception_dynres",
             "res2net_dynres", "electra_dynpad", "mistral_gen", "gptj_sft"]


def main():
    args = sys.argv[1:]
    expandable = "--expandable" in args
    conf = next((a.split("=", 1)[1] for a in args if a.startswith("--gmlake=")), None)
    chosen = [a for a in args if a != "--expandable" and not a.startswith("--gmlake=")] or WORKLOADS
    jobs = int(os.environ.get("JOBS", "1"))
    env = dict(os.environ, OUT=OUT)
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    if expandable:
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    if conf is not None:
        env["GMLAKE_RUN_CONF"] = conf
    results = {}
    running = []
    todo = list(chosen)
    while todo or running:
        while todo and len(running) < jobs:
            wl = todo.pop(0)
            p = subprocess.Popen([sys.executable, "-c", WORKER, wl], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            running.append((wl, p, time.time()))
        wl, p, t = running.pop(0)
        try:
            out, err = p.communicate(timeout=max(1, 240 - (time.time() - t)))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        line = [l for l in out.splitlines() if l.startswith("RESULT")]
        if not line:
            print(wl, "FAILED", err[-3000:], flush=True)
            continue
        r = json.loads(line[0][len("RESULT "):])
        r["secs"] = round(time.time() - t, 1)
        results[wl] = r
        print(wl, json.dumps(r), flush=True)
    name = "results-expandable.json" if expandable else "results.json"
    if conf is not None:
        name = "results-gmlake-%s.json" % (conf.replace(":", "-").replace(",", "_") or "default")
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
