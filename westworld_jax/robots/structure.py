"""Kinematic structure of a robot: objects and left-child-right-sibling (LCRS) traversal ranks.

WestWorld's structural embedding gives every body four indices: the object it belongs to and
its pre-order, in-order and post-order ranks in the LCRS binary tree of that object. A channel
(joint, actuator) takes the indices of the body it acts on. This module computes them from a
body parent array, so any MJCF/URDF gets them without hand-written per-robot tables.

Conventions (tested against hand computations in tests/test_structure.py):
- body 0 is MuJoCo's world body and is not part of any object;
- each body whose parent is the world starts an object (its subtree);
- children are ordered by body id (MJCF document order);
- LCRS: left child = first child, right child = next sibling; ranks are 0-based and per object.
  Pre-order of the LCRS tree equals pre-order of the original tree.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class BodyIndex:
  name: str
  object: int
  pre: int
  inorder: int
  post: int

  def as_tuple(self) -> tuple[int, int, int, int]:
    return (self.object, self.pre, self.inorder, self.post)


def lcrs_ranks(parent: Sequence[int], root: int) -> dict[int, tuple[int, int, int]]:
  """(pre, in, post) ranks of every node in the subtree of `root`, in its LCRS binary tree.

  Args:
    parent: parent[i] is the parent of node i (parent[root] may be anything).
    root: the subtree's root node.
  Returns:
    {node: (pre_rank, in_rank, post_rank)} for the nodes of root's subtree.
  """
  children: dict[int, list[int]] = {}
  for node, par in enumerate(parent):
    if node != root and par != node:
      children.setdefault(int(par), []).append(node)
  for kids in children.values():
    kids.sort()

  # LCRS links: left = first child, right = next sibling (siblings outside the subtree of
  # `root` never appear because the root's own siblings are not followed).
  left: dict[int, int] = {}
  right: dict[int, int] = {}
  stack = [root]
  nodes = []
  while stack:
    node = stack.pop()
    nodes.append(node)
    kids = children.get(node, [])
    if kids:
      left[node] = kids[0]
      for a, b in zip(kids[:-1], kids[1:]):
        right[a] = b
      stack.extend(kids)

  pre: dict[int, int] = {}
  ino: dict[int, int] = {}
  post: dict[int, int] = {}
  # Iterative traversals of the binary tree (robots can be deep: a 30-link snake is a path).
  stack = [root]
  while stack:
    node = stack.pop()
    pre[node] = len(pre)
    if node in right and node != root:
      stack.append(right[node])
    if node in left:
      stack.append(left[node])

  stack, node = [], root
  while stack or node is not None:
    while node is not None:
      stack.append(node)
      node = left.get(node)
    node = stack.pop()
    ino[node] = len(ino)
    node = right.get(node) if node != root else None

  stack, out = [root], []
  while stack:  # reverse of (node, right, left) order is post-order (left, right, node)
    node = stack.pop()
    out.append(node)
    if node in left:
      stack.append(left[node])
    if node in right and node != root:
      stack.append(right[node])
  for rank, node in enumerate(reversed(out)):
    post[node] = rank

  return {n: (pre[n], ino[n], post[n]) for n in pre}


def object_roots(parent: Sequence[int]) -> list[int]:
  """Bodies whose parent is the world body (0): each starts an object."""
  return [b for b in range(1, len(parent)) if int(parent[b]) == 0]


def body_indices(
  names: Sequence[str],
  parent: Sequence[int],
  actuated_bodies: Sequence[int],
  root_positions: np.ndarray | None = None,
) -> list[BodyIndex]:
  """Structural indices for bodies 1..nbody-1 (the world body is excluded).

  Object 0 is the object holding the most actuated bodies (ties: lowest body id); the other
  objects are ordered by the distance of their root body to object 0's root at the reference
  configuration (ties: body id).

  Args:
    names: body names, indexed by body id (names[0] is the world).
    parent: body parent ids (MjModel.body_parentid).
    actuated_bodies: body ids that actuators act on (with repetition allowed).
    root_positions: [nbody, 3] world positions at the reference pose (MjData.xpos after
      mj_forward at qpos0); None orders the other objects by body id.
  """
  roots = object_roots(parent)
  if not roots:
    raise ValueError("model has no bodies under <worldbody>: nothing to build a robot from")
  owner = {}
  for r in roots:
    for b in lcrs_ranks(parent, r):
      owner[b] = r
  counts = {r: 0 for r in roots}
  for b in actuated_bodies:
    if int(b) in owner:
      counts[owner[int(b)]] += 1
  main = max(roots, key=lambda r: (counts[r], -r))

  def distance(r: int) -> float:
    if root_positions is None:
      return 0.0
    return float(np.linalg.norm(root_positions[r] - root_positions[main]))

  ordered = [main] + sorted((r for r in roots if r != main), key=lambda r: (distance(r), r))
  result: dict[int, BodyIndex] = {}
  for obj, r in enumerate(ordered):
    for b, (p, i, q) in lcrs_ranks(parent, r).items():
      result[b] = BodyIndex(names[b], obj, p, i, q)
  return [result[b] for b in range(1, len(parent))]
