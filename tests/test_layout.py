"""The package's shape: no import cycles between its modules (lazy imports inside functions count
too, since they tie the modules together just the same)."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "dcic_jax"


def _imports() -> dict[str, set[str]]:
  """Module name -> the dcic_jax modules it imports anywhere in its body."""
  root = PACKAGE.parent
  graph = {}
  for path in PACKAGE.rglob("*.py"):
    name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dcic_jax"):
        for alias in node.names:   # `from dcic_jax.x import y`: y may be a module or a name in x
          sub = f"{node.module}.{alias.name}"
          deps.add(sub if (root / (sub.replace(".", "/") + ".py")).exists() else node.module)
      elif isinstance(node, ast.Import):
        deps.update(a.name for a in node.names if a.name.startswith("dcic_jax"))
    graph[name] = deps - {name}
  return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v] & graph.keys():
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_the_cycle_finder_finds_a_cycle():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
  assert _cycles(_imports()) == []


def test_loading_a_prior_does_not_import_the_trainers():
  graph = _imports()
  seen, todo = set(), ["dcic_jax.diffusion.prior", "dcic_jax.cli"]
  while todo:
    m = todo.pop()
    if m not in seen:
      seen.add(m)
      todo.extend(graph.get(m, ()))
  assert not seen & {"dcic_jax.diffusion.train", "dcic_jax.train"}
