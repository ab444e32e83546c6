"""The catalog's facts (``models.ModelInfo``, derived from ``models.configs``) are those of the model each builder
makes: every entry is built at random init and measured."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("open_clip")

from vlsm_batch.jobs import estimate  # noqa: E402
from vlsm_batch.models import MODELS, get_model_info  # noqa: E402
from vlsm_batch.models.configs import ARCHITECTURES, CLIPSegArch, CRISArch, Sam3Arch  # noqa: E402
from vlsm_batch.models.factory import create_model  # noqa: E402


@pytest.fixture(scope="module", params=MODELS.names("*"))
def built(request: pytest.FixtureRequest):
    """(catalog record, architecture config, zero-shot model at random init) for one catalog entry."""
    name = request.param
    return get_model_info(name), ARCHITECTURES[name], create_model(name, "zero_shot", {}, random_init=True)


def test_every_catalog_entry_has_one_architecture() -> None:
    assert set(ARCHITECTURES) == set(MODELS.names("*"))


def test_declared_facts_match_the_built_model(built) -> None:
    info, arch, model = built
    assert model.image_size == info.image_size == arch.image_size
    assert model.max_text_tokens == arch.context_length
    if isinstance(arch, CLIPSegArch):
        clip = model.clipseg.clip
        text, vision = clip.text_model, clip.vision_model
        assert info.family == "clipseg" and info.prompt_towers == {"text", "vision"}
        assert len(text.encoder.layers) == info.text_layers == arch.text.layers
        assert len(vision.encoder.layers) == info.vision_layers == arch.vision.layers
        assert text.embeddings.token_embedding.embedding_dim == info.text_width == arch.text.width
        assert vision.embeddings.patch_embedding.out_channels == info.vision_width == arch.vision.width
        assert info.joint_width == arch.text.width + arch.vision.width
        assert text.embeddings.position_embedding.num_embeddings == arch.context_length
        assert text.embeddings.token_embedding.num_embeddings == arch.vocab_size
        assert model.patch_size == arch.patch_size and model.extract_layers == arch.extract_layers
        assert model.clipseg.config.reduce_dim == arch.reduce_dim
        pixels = torch.zeros(1, 3, info.image_size, info.image_size)
        with torch.no_grad():
            tokens = vision.embeddings(pixels, interpolate_pos_encoding=True).shape[1]
        assert tokens == arch.vision_tokens == (info.image_size // arch.patch_size) ** 2 + 1
        # the vision tower runs to the deepest extract layer; one more row still replaces that layer's prompt
        # tokens (reference §2.4); neither tower may be exceeded
        deepest = max(model.extract_layers) + 1
        assert info.max_prompt_depth == min(deepest + 1, info.text_layers, info.vision_layers)
    elif isinstance(arch, Sam3Arch):
        sam3 = model.sam3
        text, vit = sam3.text_encoder.text_model, sam3.vision_encoder.backbone
        assert info.family == "sam3" and info.prompt_towers == {"text", "fusion"}
        assert len(text.encoder.layers) == info.text_layers == arch.text.layers == info.max_prompt_depth
        assert text.embeddings.token_embedding.embedding_dim == info.text_width == arch.text.width
        assert text.embeddings.token_embedding.num_embeddings == arch.vocab_size
        assert len(vit.layers) == info.vision_layers == arch.vit.layers
        assert vit.embeddings.patch_embeddings.projection.out_channels == info.vision_width == arch.vit.width
        assert [i for i, layer in enumerate(vit.layers) if layer.window_size == 0] == list(arch.global_layers)
        assert {layer.window_size for layer in vit.layers} == {0, arch.window_size}
        assert len(sam3.detr_encoder.layers) == info.fusion_layers == arch.fusion.layers
        assert sam3.detr_encoder.layers[0].mlp.fc1.out_features == arch.fusion.mlp
        assert len(sam3.detr_decoder.layers) == arch.decoder_layers
        assert info.max_num_context == arch.context_length - 3
        pixels = torch.zeros(1, 3, info.image_size, info.image_size)
        with torch.no_grad():
            image = model.encode_image(pixels)
        assert image.fpn[-1].shape[-2:] == (arch.grid, arch.grid) and image.fpn[0].shape[-1] == arch.mask_size
        assert arch.vision_tokens == arch.grid**2
    else:
        assert isinstance(arch, CRISArch)
        clip = model.cris.backbone
        assert info.family == "cris" and info.prompt_towers == {"text"}
        assert info.vision_layers is None and info.vision_width is None and info.joint_width is None
        assert not hasattr(clip.visual, "transformer")  # a convolutional image encoder: no visual tokens
        assert len(clip.transformer.resblocks) == info.text_layers == arch.text.layers
        assert clip.token_embedding.embedding_dim == info.text_width == arch.text.width
        assert clip.transformer.resblocks[0].attn.num_heads == arch.text.heads
        assert clip.transformer.resblocks[0].mlp.c_fc.out_features == arch.text.mlp
        assert clip.positional_embedding.shape[0] == arch.context_length
        assert clip.text_projection.shape == (arch.text.width, arch.embed_dim)
        assert [len(getattr(clip.visual, f"layer{i}")) for i in range(1, 5)] == list(arch.rn_layers)
        assert len(model.cris.decoder.layers) == arch.decoder_layers
        # text prompts only, one fresh row per text layer
        assert info.max_prompt_depth == info.text_layers


def test_full_cris_backbone_is_open_clips_rn50() -> None:
    """The backbone built from ``configs.CRIS`` is open_clip's RN50 at 416 px (same keys, shapes and seeded
    values), so CRIS checkpoints and CLIP RN50 files still load strictly."""
    import open_clip

    from vlsm_batch.models.configs import CRIS
    from vlsm_batch.models.cris import _backbone
    from vlsm_batch.models.prompted import seeded

    ours = seeded(lambda: _backbone(CRIS)).state_dict()
    theirs = seeded(
        lambda: open_clip.create_model("RN50", pretrained=None, force_image_size=416, force_quick_gelu=True)
    ).state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_memory_estimate_reads_the_same_architecture(name: str) -> None:
    """``jobs.estimate`` writes the architectures out as numbers: they must be these."""
    arch, est = ARCHITECTURES[name], estimate.ARCHITECTURES[name]
    assert est.image == arch.image_size and est.vocab == arch.vocab_size and est.positions == arch.context_length
    assert (est.text.width, est.text.layers, est.text.mlp) == (arch.text.width, arch.text.layers, arch.text.mlp)
    if isinstance(arch, CLIPSegArch):
        assert (est.vision.width, est.vision.layers, est.vision.mlp) == (
            arch.vision.width,
            arch.vision.layers,
            arch.vision.mlp,
        )
        assert (est.patch, est.config_image, est.projection, est.reduce, est.extract, est.decoder_mlp) == (
            arch.patch_size,
            arch.position_image_size,
            arch.projection_dim,
            arch.reduce_dim,
            arch.extract_layers,
            arch.decoder_mlp,
        )
    elif isinstance(arch, Sam3Arch):
        assert (est.vit.width, est.vit.layers, est.vit.mlp, est.patch, est.window) == (
            arch.vit.width,
            arch.vit.layers,
            arch.vit.mlp,
            arch.patch_size,
            arch.window_size,
        )
        assert est.global_layers == len(arch.global_layers) and est.position_image == arch.position_image_size
        assert (est.fusion.width, est.fusion.layers, est.fusion.mlp) == (
            arch.fusion.width,
            arch.fusion.layers,
            arch.fusion.mlp,
        )
        assert (est.decoder_layers, est.queries, est.clip_projection) == (
            arch.decoder_layers,
            arch.queries,
            arch.text_projection_dim,
        )
    else:
        assert (est.rn_width, est.rn_layers, est.embed, est.fpn_in, est.fpn_out, est.state, est.dec_ffn) == (
            arch.rn_width,
            arch.rn_layers,
            arch.embed_dim,
            arch.fpn_in,
            arch.fpn_out,
            arch.state_dim,
            arch.decoder_ffn,
        )
        assert est.dec_layers == arch.decoder_layers
