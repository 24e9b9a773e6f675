"""The public surface: every name in ``__all__`` exists, nothing private leaks, and the agent
model exports what autogen_core 0.7 exports (DESIGN §2)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import pytest

import discovery
import mesh

AUTOGEN_MODEL_NAMES = [
    "Agent",
    "AgentRuntime",
    "AgentId",
    "AgentType",
    "AgentMetadata",
    "AgentProxy",
    "TopicId",
    "Subscription",
    "TypeSubscription",
    "TypePrefixSubscription",
    "DefaultSubscription",
    "DefaultTopicId",
    "default_subscription",
    "type_subscription",
    "BaseAgent",
    "RoutedAgent",
    "message_handler",
    "event",
    "rpc",
    "ClosureAgent",
    "ClosureContext",
    "MessageContext",
    "CancellationToken",
    "AgentInstantiationContext",
    "MessageSerializer",
    "UnknownPayload",
    "try_get_known_serializers_for_type",
    "JSON_DATA_CONTENT_TYPE",
    "PROTOBUF_DATA_CONTENT_TYPE",
    "InterventionHandler",
    "DefaultInterventionHandler",
    "DropMessage",
    "CantHandleException",
    "UndeliverableException",
    "MessageDroppedException",
    "NotAccessibleError",
]


@pytest.mark.parametrize("package", [mesh, discovery], ids=lambda p: p.__name__)
def test_every_name_in_all_exists(package: types.ModuleType) -> None:
    missing = [name for name in package.__all__ if not hasattr(package, name)]
    assert missing == []


@pytest.mark.parametrize("package", [mesh, discovery], ids=lambda p: p.__name__)
def test_all_is_unique(package: types.ModuleType) -> None:
    assert len(set(package.__all__)) == len(package.__all__)


def test_agent_model_names_match_autogen_core() -> None:
    missing = [name for name in AUTOGEN_MODEL_NAMES if name not in mesh.__all__]
    assert missing == []
    assert "MeshNode" in mesh.__all__
    assert "MeshError" in mesh.__all__


def _autogen(name: str) -> object:
    autogen_core = importlib.import_module("autogen_core")
    if hasattr(autogen_core, name):
        return getattr(autogen_core, name)
    return getattr(importlib.import_module("autogen_core.exceptions"), name)


def _params(obj: object) -> list[tuple[str, object]]:
    signature = inspect.signature(obj)  # type: ignore[arg-type]
    return [(p.name, p.kind) for p in signature.parameters.values()]


@pytest.mark.parametrize("name", AUTOGEN_MODEL_NAMES)
def test_same_signatures_as_autogen_core(name: str) -> None:
    """Constants are equal; classes and functions take the same parameters; public methods too."""
    ours, theirs = getattr(mesh, name), _autogen(name)
    if isinstance(theirs, str):
        assert ours == theirs
        return
    if inspect.isfunction(theirs):
        assert _params(ours) == _params(theirs)
        return
    assert inspect.isclass(ours)
    for attr, member in vars(theirs).items():
        if attr.startswith("_") and attr != "__init__":
            continue
        assert hasattr(ours, attr), f"{name}.{attr} is missing"
        if (inspect.isfunction(member) and attr not in ("__init__",)) or (
            attr == "__init__" and inspect.isfunction(member) and "__init__" in vars(ours)
        ):
            assert _params(getattr(ours, attr)) == _params(member), f"{name}.{attr}"


@pytest.mark.parametrize("package", [mesh, discovery], ids=lambda p: p.__name__)
def test_no_private_module_leaks(package: types.ModuleType) -> None:
    """Public names are defined in the package's modules, and no ``_module`` is a public attribute."""
    leaked = [
        name
        for name in dir(package)
        if isinstance(getattr(package, name, None), types.ModuleType) and name in package.__all__
    ]
    assert leaked == []
    for name in package.__all__:
        obj = getattr(package, name)
        module = getattr(obj, "__module__", None)
        if module is not None and not isinstance(obj, str):
            assert module.split(".")[0] == package.__name__, f"{name} comes from {module}"


def test_private_modules_are_underscored() -> None:
    public_submodules = {"autogen", "bridge", "testing", "cli", "demo"}
    for info in pkgutil.iter_modules(mesh.__path__):
        assert info.name.startswith("_") or info.name in public_submodules, info.name
    for info in pkgutil.iter_modules(discovery.__path__):
        assert info.name.startswith("_"), info.name
