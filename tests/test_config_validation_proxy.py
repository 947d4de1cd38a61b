"""Bad proxy, compressor, demonstration-layout and LM-proxy settings fail at construction.

Each case here used to be accepted and fail later (an ``AttributeError`` deep in the export
for a ``str`` head, a load-time error for a missing file), or never: an empty role set and
language codes compressed nothing or segmented with English rules without a word. The
accepted spellings are run on the real proxy (onnxruntime) to show they work end to end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _ci import require_module
from promptsieve import (
    Compressor,
    CompressorConfig,
    ConfigError,
    DemoFormat,
    ProxyConfig,
)
from promptsieve.prompt import Message
from promptsieve.proxy import Proxy
from promptsieve.proxy._export import MAX_OPSET, MIN_OPSET, default_model_dir
from promptsieve.proxy._runtime import default_head_path

WORDS = (
    "The quarterly report covers revenue growth across all regions and several new product "
    "lines that launched during the period under review by the finance team this year. "
)


@pytest.fixture(scope="module")
def token_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained-format token head file (``proxy._head.save_head``)."""
    torch = require_module("torch")
    from promptsieve.proxy._head import TokenHead, save_head

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("head") / "token-head.safetensors"
    save_head(TokenHead(context=3, mlp_hidden=16, use_pooled=True).eval(), path)
    return path


# -- ProxyConfig: paths ---------------------------------------------------------------------


def test_a_str_head_is_a_path_and_the_proxy_exports_and_runs_with_it(
    token_head: Path, tmp_path: Path
) -> None:
    config = ProxyConfig(head=str(token_head), cache_dir=str(tmp_path))
    assert config.head == token_head and isinstance(config.head, Path)
    assert isinstance(config.cache_dir, Path)
    proxy = Proxy.load(config)  # was AttributeError: 'str' object has no attribute 'open'
    assert proxy.exported
    keep = proxy.encode("The capital of France is Paris.").keep_logits
    assert keep.shape[0] > 0 and np.abs(keep).max() > 0  # the head is in the graph


def test_path_fields_take_os_pathlike_and_expand_the_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class Where:  # an os.PathLike that is not a Path
        def __fspath__(self) -> str:
            return str(default_head_path())

    assert ProxyConfig(scorer_head=Where()).scorer_head == default_head_path()  # type: ignore[arg-type]
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ProxyConfig(cache_dir="~/proxy-cache").cache_dir == tmp_path / "proxy-cache"


def test_missing_or_wrong_files_are_config_errors(token_head: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ProxyConfig\(head=\.\.\.\): no file at"):
        ProxyConfig(head="some/str/path")
    with pytest.raises(ConfigError, match=r"ProxyConfig\(scorer_head=\.\.\.\): no file at"):
        ProxyConfig(scorer_head=tmp_path / "absent.safetensors")
    # the two heads swapped: each is refused by its format
    with pytest.raises(ConfigError, match="is not a token head"):
        ProxyConfig(head=default_head_path())
    with pytest.raises(ConfigError, match="is not a query head"):
        ProxyConfig(scorer_head=token_head)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ConfigError, match=r"scorer_head=\.\.\.\): cannot read head file"):
        ProxyConfig(scorer_head=junk)


def test_model_dir_must_hold_the_weights_now(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model_dir=\.\.\.\): .* is not a folder"):
        ProxyConfig(model_dir=tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        ProxyConfig(model_dir=tmp_path / "file")
    with pytest.raises(ConfigError, match=r"has no model\.safetensors"):
        ProxyConfig(model_dir=tmp_path)
    weights = default_model_dir()
    assert ProxyConfig(model_dir=str(weights)).model_dir == weights


def test_cache_dir_may_not_exist_yet_but_must_not_be_a_file(
    proxy: Proxy, proxy_cache_dir: Path, tmp_path: Path
) -> None:
    ProxyConfig(cache_dir=tmp_path / "made" / "on" / "first" / "use")  # made lazily
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"cache_dir=\.\.\.\): .* exists and is not a folder"):
        ProxyConfig(cache_dir=tmp_path / "file")


# -- ProxyConfig: providers and opset -------------------------------------------------------


def test_misspelt_providers_are_named_with_the_available_ones() -> None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    with pytest.raises(ConfigError, match="'cpu'") as info:
        ProxyConfig(providers=["cpu"])
    assert str(available) in str(info.value)
    with pytest.raises(ConfigError, match=r"did you mean 'CUDAExecutionProvider' for 'cuda'"):
        ProxyConfig(providers=("cuda", "CPUExecutionProvider"))
    with pytest.raises(ConfigError, match="is empty"):
        ProxyConfig(providers=())


def test_a_provider_another_onnxruntime_build_has_is_skipped_at_load(
    proxy_cache_dir: Path,
) -> None:
    """A config shared across machines may name a provider this build does not list (ROCm
    is not in onnxruntime 1.32's list): accepted, and skipped at load as before."""
    cfg = ProxyConfig(
        providers=("ROCMExecutionProvider", "CPUExecutionProvider"), cache_dir=proxy_cache_dir
    )
    assert Proxy.load(cfg).provider == "CPUExecutionProvider"


def test_a_known_provider_this_machine_lacks_is_left_to_load(proxy_cache_dir: Path) -> None:
    """CUDA is an onnxruntime provider name: accepted at construction, and at load skipped
    (with a warning) or refused when nothing else is left, as before."""
    import onnxruntime as ort

    cuda = ProxyConfig(providers=("CUDAExecutionProvider",), cache_dir=proxy_cache_dir)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConfigError, match=r"promptsieve\[gpu\]"):
            Proxy.load(cuda)
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    proxy = Proxy.load(ProxyConfig(providers=both, cache_dir=proxy_cache_dir))
    assert proxy.provider in both
    assert proxy.embed(["a sentence"]).shape == (1, Proxy.dim)


@pytest.mark.parametrize("opset", [1, MIN_OPSET - 1, MAX_OPSET + 1])
def test_opset_out_of_range_is_a_config_error(opset: int) -> None:
    with pytest.raises(
        ConfigError, match=rf"opset=\.\.\.\) must be in \[{MIN_OPSET}, {MAX_OPSET}\]"
    ):
        ProxyConfig(opset=opset)
    from promptsieve.proxy.lm import LMProxyConfig

    with pytest.raises(ConfigError, match=r"LMProxyConfig\(opset=\.\.\.\) must be in"):
        LMProxyConfig(opset=opset)  # accepted before; the export failed in the background


def test_the_lowest_accepted_opset_exports_and_runs(tmp_path: Path) -> None:
    """``MIN_OPSET`` is a measured floor: both graphs export there and agree with opset 17."""
    require_module("torch")
    low = Proxy.load(ProxyConfig(opset=MIN_OPSET, cache_dir=tmp_path))
    ref = Proxy.load(ProxyConfig(cache_dir=tmp_path))
    text = "The capital of France is Paris. " + WORDS
    assert np.abs(low.embed([text]) - ref.embed([text])).max() < 1e-4
    got, want = low.keep_probs(text, question="capital?"), ref.keep_probs(text, question="capital?")
    assert np.abs(got.keep_probs - want.keep_probs).max() < 1e-4


# -- CompressorConfig: roles and language -----------------------------------------------------


@pytest.mark.parametrize("roles", [[], [""], ["user", 5]])
def test_roles_that_name_no_role_are_config_errors(roles: list[object]) -> None:
    with pytest.raises(ConfigError, match=r"CompressorConfig\(roles=\.\.\.\) must"):
        CompressorConfig(roles=roles)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["reorder", "part_passages"])
@pytest.mark.parametrize(
    "kwargs",
    [{"scorer": "head"}, {"scorer": "sentence"}, {"coarse_to_fine": False}],
)
def test_coarse_only_settings_without_the_coarse_budget_are_config_errors(
    field: str, kwargs: dict[str, object]
) -> None:
    with pytest.raises(
        ConfigError, match=rf"CompressorConfig\({field}=True\) works on the coarse.*: set coarse"
    ):
        CompressorConfig(**{field: True}, **kwargs)  # type: ignore[arg-type]
    # on the coarse path they are fine: the default, relevance, or the budget turned on
    assert CompressorConfig(**{field: True}, **{**kwargs, "coarse_to_fine": True}).coarse  # type: ignore[arg-type]
    assert CompressorConfig(**{field: True}).coarse  # type: ignore[arg-type]


def test_a_custom_role_is_compressed_by_the_compressor(proxy: Proxy, proxy_cache_dir: Path) -> None:
    """A role the adapters never produce ("context") is still a role a direct caller uses."""
    messages = [Message.text("context", WORDS * 12), Message.text("user", "What is it?")]
    cfg = CompressorConfig(roles=["context", "user"], proxy=ProxyConfig(cache_dir=proxy_cache_dir))
    out = Compressor(cfg).compress(messages, ratio=0.5)
    assert out.changed and out.tokens_after < out.tokens_before


def test_a_valid_extra_role_is_compressed(proxy: Proxy, proxy_cache_dir: Path) -> None:
    messages = [Message.text("system", WORDS * 12)]
    proxy_cfg = ProxyConfig(cache_dir=proxy_cache_dir)
    cfg = CompressorConfig(roles=["system"], proxy=proxy_cfg)
    out = Compressor(cfg).compress(messages, ratio=0.5)
    assert out.changed and out.tokens_after < out.tokens_before
    assert not Compressor(CompressorConfig(proxy=proxy_cfg)).compress(messages, ratio=0.5).changed


@pytest.mark.parametrize(
    ("language", "hint"),
    [("xx-nope", ""), ("xx", ""), ("english", ""), ("", ""), ("en-", ""), ("jp", "'ja'"), (5, "")],
)
def test_unknown_language_codes_are_config_errors(language: object, hint: str) -> None:
    with pytest.raises(ConfigError, match=r"language") as info:
        CompressorConfig(language=language)  # type: ignore[arg-type]
    assert hint in str(info.value)


def test_language_codes_are_stored_as_the_code_sentencex_is_given() -> None:
    """sentencex matches lower-case codes only ("DE" used to get English rules), and a region
    it does not list ("de-DE") gets English rules too: the primary subtag is what it gets."""
    from promptsieve._passages import split_sentences

    text = "Er kam am 3. Mai. Es kam Dr. Müller bzw. Frau Prof. Schmidt. Gut."
    for given in ("DE", "de-DE", "de_AT"):
        cfg = CompressorConfig(language=given)
        assert cfg.language == "de"
        assert len(split_sentences(text, language=cfg.language)) == 3  # German rules
    assert len(split_sentences(text, language="de-de")) == 5  # what "de-DE" did: English
    for given, used in (("pt-BR", "pt"), ("zh-Hant", "zh"), ("en_US", "en"), ("fil", "fil")):
        assert CompressorConfig(language=given).language == used


# -- DemoFormat and LMProxyConfig -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"header": 5},
        {"system": 5},
        {"demo": None},
        {"query": b"Q: {input}"},
        {"answer": 1},
        {"chat": "yes"},
        {"pairs": 1},
    ],
)
def test_demo_format_fields_of_the_wrong_type_are_config_errors(kwargs: dict[str, Any]) -> None:
    (name,) = kwargs
    with pytest.raises(ConfigError, match=rf"DemoFormat\({name}=\.\.\.\) must be"):
        DemoFormat(**kwargs)


def test_lm_proxy_gguf_must_exist_at_construction(tmp_path: Path) -> None:
    from promptsieve.proxy.lm import LMProxyConfig

    with pytest.raises(ConfigError, match=r"LMProxyConfig\(gguf=\.\.\.\): no file at"):
        LMProxyConfig(gguf=tmp_path / "absent.gguf")
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    assert LMProxyConfig(gguf=str(gguf)).gguf == gguf
    with pytest.raises(ConfigError, match=r"LMProxyConfig\(providers=\.\.\.\) names"):
        LMProxyConfig(providers=("Cuda",))
    LMProxyConfig(int8=False, providers=("CUDAExecutionProvider",))  # a real name: load decides
