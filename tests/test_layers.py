"""The import graph of vkafka has no circles, and the bottom layers stay bottom.

The graph is read from the source with ``ast`` (no module is imported), so an
import inside a function counts as much as one at the top: deferring an
import hides a circle from Python, not from the design (docs/architecture.md,
"Layers").
"""

import ast
import collections
import pathlib

from twisted.trial import unittest

import vkafka

PACKAGE = pathlib.Path(vkafka.__file__).parent
SUBPACKAGES = ("vkafka.auth", "vkafka.tenancy", "vkafka.state", "vkafka.proxy",
               "vkafka.admin", "vkafka.protocol", "vkafka.usage")


def modules():
    """Module name -> (path, is a package's __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("vkafka",) + path.relative_to(PACKAGE).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imported(name, path, is_package, known):
    """The vkafka modules that module *name* imports, anywhere in its body."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            targets.add(source)
            # "from package import module" imports the module too
            targets.update(f"{source}.{alias.name}" for alias in node.names)
    return {t for t in targets if t in known and t != name}


def import_graph():
    """Module -> the vkafka modules it imports."""
    known = modules()
    return {name: imported(name, path, is_package, known)
            for name, (path, is_package) in known.items()}


def package_of(module):
    """``vkafka.proxy.splice`` -> ``vkafka.proxy``; top-level modules stand alone."""
    return ".".join(module.split(".")[:2])


def package_graph(graph):
    """Package -> {imported package: an example module edge}."""
    packages = collections.defaultdict(dict)
    for source, targets in graph.items():
        packages[package_of(source)]
        for target in targets:
            a, b = package_of(source), package_of(target)
            if a != b:
                packages[a].setdefault(b, f"{source} -> {target}")
    return packages


def circles(graph):
    """The strongly connected components of more than one node (Tarjan):
    each node of one reaches every other, so every one is a circle."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def cycles(graph):
    """One cycle (a list of nodes, first repeated last) per circle."""
    return [_cycle_in(graph, component) for component in circles(graph)]


def report(graph, what, edges=None):
    """Each circle: its members and one cycle through them (with, for
    packages, the module import behind each step)."""
    lines = []
    for component in circles(graph):
        cycle = _cycle_in(graph, component)
        lines.append(f"{what} in a circle: {', '.join(sorted(component))}; e.g. "
                     + " -> ".join(cycle))
        if edges is not None:
            lines.extend(f"    {edges[a][b]}" for a, b in zip(cycle, cycle[1:]))
    return "\n".join(lines)


def _cycle_in(graph, component):
    """A shortest path from the component's first node back to itself."""
    start = min(component)
    previous = {start: None}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph.get(node, ())):
            if target == start:
                path = []
                while node is not None:
                    path.append(node)
                    node = previous[node]
                return path[::-1] + [start]
            if target in component and target not in previous:
                previous[target] = node
                queue.append(target)
    return sorted(component)


class CycleFinderTests(unittest.TestCase):
    """The finder itself, on graphs made up here."""

    def test_finds_a_circle_and_ignores_a_chain(self):
        """a -> b -> c -> a is reported as that path; d -> a hangs off it and
        is not part of it."""
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        self.assertEqual(cycles(graph), [["a", "b", "c", "a"]])
        self.assertEqual(cycles({"a": {"b"}, "b": set()}), [])

    def test_resolves_relative_imports(self):
        """``from ..x import y`` in vkafka.p.m is vkafka.x (and vkafka.x.y if
        that is a module); ``from . import m2`` is vkafka.p and vkafka.p.m2."""
        path = pathlib.Path(self.mktemp())
        path.write_text("def f():\n    from ..x import y\nfrom . import m2\n")
        known = {"vkafka.x", "vkafka.x.y", "vkafka.p", "vkafka.p.m", "vkafka.p.m2"}
        self.assertEqual(imported("vkafka.p.m", path, False, known),
                         {"vkafka.x", "vkafka.x.y", "vkafka.p", "vkafka.p.m2"})


class LayerTests(unittest.TestCase):
    """The real graph of the vkafka package."""

    def setUp(self):
        self.graph = import_graph()

    def test_graph_is_read(self):
        """The graph sees real edges (guards the other tests against reading
        nothing): the splice imports the rule table, the store the client."""
        self.assertIn("vkafka.tenancy.rules.addresses", self.graph["vkafka.proxy.splice"])
        self.assertIn("vkafka.client", self.graph["vkafka.state.kafka"])

    def test_no_module_cycles(self):
        """No module imports, directly or through others, itself."""
        self.assertEqual(report(self.graph, "modules"), "")

    def test_no_package_cycles(self):
        """No package (auth, tenancy, state, proxy, admin, protocol, usage, and
        the top-level modules) imports one that imports it back."""
        packages = package_graph(self.graph)
        for name in SUBPACKAGES:
            self.assertIn(name, packages)
        self.assertEqual(report({p: set(t) for p, t in packages.items()},
                                "packages", packages), "")

    def test_protocol_imports_no_other_layer(self):
        """vkafka.protocol (bytes and the codec, no I/O) is the bottom layer."""
        outside = sorted(f"{source} -> {target}"
                         for source, targets in self.graph.items()
                         if package_of(source) == "vkafka.protocol"
                         for target in targets
                         if package_of(target) != "vkafka.protocol")
        self.assertEqual(outside, [])

    def test_client_and_names_stay_low(self):
        """The internal Kafka client uses only the codec, and the name facts
        nothing of vkafka: the state store and the proxy both build on them."""
        self.assertEqual({package_of(t) for t in self.graph["vkafka.client"]},
                         {"vkafka.protocol"})
        self.assertEqual(self.graph["vkafka.names"], set())
