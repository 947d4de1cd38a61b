"""promptsieve for LangChain: an LCEL step, a document compressor, a chat-model wrapper
and (with LangChain v1 installed) agent middleware.

``SieveMiddleware`` is imported on first access, so langchain-core alone is enough for
everything else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    from promptsieve._errors import missing_extra

    raise missing_extra("langchain-core", "langchain") from exc

from promptsieve_langchain._chat_model import SieveChatModel, wrap_chat_model
from promptsieve_langchain._documents import SieveDocumentCompressor
from promptsieve_langchain._example_selector import SieveExampleSelector
from promptsieve_langchain._runnable import CompressMessages, compress_messages
from promptsieve_langchain._sieves import EVENT, default_sieve

if TYPE_CHECKING:
    from promptsieve_langchain._middleware import SieveMiddleware

__all__ = [
    "EVENT",
    "CompressMessages",
    "SieveChatModel",
    "SieveDocumentCompressor",
    "SieveExampleSelector",
    "SieveMiddleware",
    "compress_messages",
    "default_sieve",
    "wrap_chat_model",
]


def __getattr__(name: str) -> Any:
    if name == "SieveMiddleware":
        try:
            from promptsieve_langchain._middleware import SieveMiddleware
        except ImportError as exc:
            from promptsieve._errors import ConfigError

            raise ConfigError(
                "SieveMiddleware needs LangChain v1 agent middleware "
                "(langchain.agents.middleware.AgentMiddleware); install it with: "
                "pip install 'langchain>=1.0'"
            ) from exc
        return SieveMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
