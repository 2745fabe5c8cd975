"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) in host/tests/openapi_conformance.rs.

Works around a CPython 3.11 bug rather than anything in the API: `ast.parse` called deep in
the stack can raise `SystemError: AST constructor recursion depth mismatch`, and Hypothesis
calls it to describe a lambda when it builds a strategy's repr, so some runs ended in a
schemathesis "Runtime Error" on whichever operation drew such a strategy first. A lambda's
description is only text for reports: on that error it is the placeholder Hypothesis itself
uses when it cannot find a lambda's source.
"""

from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _lambda_description(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description
