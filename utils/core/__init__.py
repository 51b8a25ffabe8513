"""The ground floor: what every other package may import and which imports none of them.

Short error-message quoting (``text``), the base class of errors a user caused (``errors``), argparse value
types and the help layout (``argtypes``), image file suffixes (``images``), the YAML reader (``yaml_file``),
the forward-pass precision (``precision``) and small torch helpers (``torch_utils``) that inference and
training share. Nothing here imports from ``models``, ``data`` or another ``utils`` package.
"""
