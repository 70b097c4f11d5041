"""The error evaluate.py reports in one line (exit status 2, nothing written)."""


class EvaluationError(Exception):
  """Bad input for an evaluation: a flag, a file or a checkpoint that does not fit.

  The message names the flag or file and says what is wrong; scripts print it as
  `<script>: error: <message>` and exit with status 2 without writing any output.
  """
