"""The manual engine never touches autograd: checked in its source and at run time."""

import ast
import pathlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import manual_backprop
from manual_backprop.config import HIDDEN_ACTIVATIONS, LOSSES, MLPConfig
from manual_backprop.constraints import max_norm_
from manual_backprop.model import MLP
from manual_backprop.optim import SGD
from torch_reference.parity import synthetic_batch

ENGINE_DIR = pathlib.Path(manual_backprop.__file__).parent

# Attributes that only exist to drive or bypass autograd, or to reach PyTorch's own derivative kernels
# (torch.ops.aten.*_backward, torch._C._nn.*_backward, torch._VF).
FORBIDDEN_ATTRIBUTES = {
    "autograd", "func", "backward", "grad", "requires_grad", "requires_grad_", "retain_grad", "retains_grad",
    "grad_fn", "enable_grad", "set_grad_enabled", "vjp", "jvp", "jacrev", "jacfwd", "jacobian", "hessian",
    "ops", "_C", "_VF",
}
FORBIDDEN_MODULE_PARTS = {"autograd", "func", "functorch", "_C"}
# The one operator reached through torch.ops: a forward kernel, used for its exp (see vectorised_exp.py).
ALLOWED_FORWARD_OPS = {"torch.ops.aten.log_sigmoid_forward"}


def dotted_name(node: ast.AST) -> str:
    """'torch.ops.aten.x' for the attribute chain torch.ops.aten.x; '' when the chain has calls or indexing."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    return ".".join([node.id, *reversed(parts)])


def forbidden_uses(source: str, own_names: set[str]) -> list[str]:
    """Every forbidden construct in ``source``:
    - an attribute in FORBIDDEN_ATTRIBUTES (``x.grad``, ``loss.backward()``, ``torch.autograd``, ...);
    - any attribute or name containing "backward" that the engine does not define itself (this catches
      torch's ``*_backward`` kernels, ``torch._softmax_backward_data`` and friends, however reached);
    - an import of an autograd module.
    """
    problems = []
    tree = ast.parse(source)
    allowed_nodes = set()  # every link of an allowed chain such as torch.ops.aten.log_sigmoid_forward
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and dotted_name(node) in ALLOWED_FORWARD_OPS:
            while isinstance(node, ast.Attribute):
                allowed_nodes.add(id(node))
                node = node.value
    for node in ast.walk(tree):
        if id(node) in allowed_nodes:
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] + ([node.module] if getattr(node, "module", None) else [])
            problems += [f"line {node.lineno}: import of {module}" for module in modules
                         if FORBIDDEN_MODULE_PARTS & set(module.split("."))]
        elif isinstance(node, ast.Attribute):
            if node.attr in FORBIDDEN_ATTRIBUTES or ("backward" in node.attr.lower() and node.attr not in own_names):
                problems.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Name):
            if node.id in ("autograd", "functorch") or ("backward" in node.id.lower() and node.id not in own_names):
                problems.append(f"line {node.lineno}: {node.id}")
    return problems


def engine_functions() -> set[str]:
    """Names the engine defines itself: functions, methods and annotated class fields."""
    names = set()
    for path in ENGINE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.ClassDef):
                names.update(item.target.id for item in node.body
                             if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name))
    return names


def test_engine_source_uses_no_autograd_api():
    own = engine_functions()
    problems = {str(path.relative_to(ENGINE_DIR)): forbidden_uses(path.read_text(), own)
                for path in sorted(ENGINE_DIR.rglob("*.py"))}
    problems = {path: found for path, found in problems.items() if found}
    assert not problems, problems


@pytest.mark.parametrize("snippet", [
    "loss.backward()",
    "import torch.autograd",
    "from torch.autograd import grad",
    "torch.autograd.grad(loss, [w])",
    "torch.func.vjp(f, x)",
    "w.requires_grad_(True)",
    "torch.ops.aten.threshold_backward(g, x, 0)",
    "torch._softmax_backward_data(g, y, 1, y.dtype)",
    "torch._C._nn.mse_loss_backward(g, a, b, 1)",
    "with torch.enable_grad(): pass",
    "z.retain_grad()",
    "dW = W.grad",
    "g = torch.nn.functional.some_backward(x)",
    "from torch.func import grad",
    "torch.ops.aten.log_sigmoid_backward(g, x, buffer)",
    "torch.ops.aten.exp(x)",
])
def test_the_source_check_catches_forbidden_uses(snippet):
    assert forbidden_uses(snippet, engine_functions())


def test_the_source_check_allows_our_own_backward_functions():
    assert not forbidden_uses("dz = relu_backward(da, a)\ndx, dW, db = linear_backward(dz, cache)", engine_functions())


class RecordOps(TorchDispatchMode):
    """Records the name of every ATen operator that runs."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_no_backward_kernel_runs_during_a_training_step(activation, loss):
    """At run time: no ATen *_backward operator is dispatched while the engine trains, under inference_mode,
    with every layer and regulariser on: dropout on the input and hidden layers, maxout, max-norm, dL/dX."""
    config = MLPConfig(sizes=(12, 9, 7, 4), activation=activation, loss=loss, l2=0.01, dropout=0.5,
                       input_dropout=0.2, max_norm=0.5, maxout_pieces=3 if activation == "maxout" else 2)
    generator = torch.Generator().manual_seed(0)
    model = MLP(config, generator=generator)
    optimizer = SGD(model.params, lr=0.1, momentum=0.9)
    X, y = synthetic_batch(config, 5, generator)
    recorder = RecordOps()
    with torch.inference_mode(), recorder:
        for _ in range(2):
            optimizer.step(model.loss_and_gradients(X, y, train=True, input_grad=True).gradients())
            max_norm_(model.params, config.max_norm, config)
    assert recorder.ops, "the recorder saw nothing: the check would be vacuous"
    assert any("addmm" in op for op in recorder.ops)
    assert any("bernoulli" in op for op in recorder.ops) and any("linalg_vector_norm" in op for op in recorder.ops)
    if activation == "maxout":
        assert any("max.dim" in op for op in recorder.ops) and any("scatter" in op for op in recorder.ops)
    backward_ops = sorted(op for op in recorder.ops if "backward" in op)
    assert not backward_ops, backward_ops


def test_the_runtime_check_sees_autograd_kernels():
    """The recorder does notice a backward kernel when autograd runs (so the test above can fail)."""
    x = torch.randn(4, 3, requires_grad=True)
    recorder = RecordOps()
    with recorder:
        torch.sigmoid(x).sum().backward()
    assert any("sigmoid_backward" in op for op in recorder.ops)
