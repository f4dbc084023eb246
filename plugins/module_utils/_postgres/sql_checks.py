# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: read-only SQL checks of a restored database (``postgres_check``).

Each statement runs in its own ``READ ONLY`` transaction; its value is compared with
``eq``/``ne``/``lt``/``le``/``gt``/``ge``, or its rows are counted.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import csv
import decimal
import io
import time
import uuid

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

COMPARES = ('eq', 'ne', 'lt', 'le', 'gt', 'ge')
CHECK_KEYS = ('name', 'sql', 'expect', 'compare', 'expect_rows')
TRUE_TEXT = ('t', 'true')
FALSE_TEXT = ('f', 'false')


def _number(value):
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = decimal.Decimal(str(value).strip())
    except (decimal.InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _boolean(text):
    lowered = str(text).strip().lower()
    if lowered in TRUE_TEXT:
        return True
    if lowered in FALSE_TEXT:
        return False
    return None


_OPS = {
    'eq': lambda a, b: a == b, 'ne': lambda a, b: a != b,
    'lt': lambda a, b: a < b, 'le': lambda a, b: a <= b,
    'gt': lambda a, b: a > b, 'ge': lambda a, b: a >= b,
}


def compare_values(actual, expect, compare='eq'):
    """(ok, reason) for actual (text or None) against expect.

    Numbers when both read as numbers; booleans when expect is one (t/true, f/false); else text.
    lt/le/gt/ge need numbers on both sides.
    """
    if compare not in _OPS:
        raise RecoveryError('unknown comparison %r (one of %s)' % (compare, ', '.join(COMPARES)))
    if actual is None:
        return False, 'no value (no row, or NULL)'
    if isinstance(expect, bool):
        got = _boolean(actual)
        if got is None:
            return False, '%r is not a boolean' % actual
        if compare not in ('eq', 'ne'):
            return False, 'booleans compare only with eq or ne'
        ok = _OPS[compare](got, expect)
        return ok, None if ok else '%s is not %s %s' % (actual, compare, str(expect).lower())
    left, right = _number(actual), _number(expect)
    if left is not None and right is not None:
        ok = _OPS[compare](left, right)
        return ok, None if ok else '%s is not %s %s' % (actual, compare, expect)
    if compare not in ('eq', 'ne'):
        what = 'the value %r' % actual if left is None else 'the expected value %r' % (expect,)
        return False, '%s is not a number (needed by %s)' % (what, compare)
    ok = _OPS[compare](str(actual).strip(), str(expect).strip())
    return ok, None if ok else '%r is not %s %r' % (actual, compare, str(expect))


def normalize_checks(checks):
    """Validated copies of the check definitions; RecoveryError names the first bad one."""
    found = []
    names = set()
    for index, check in enumerate(checks or []):
        if not isinstance(check, dict):
            raise RecoveryError('check #%d is not a dictionary' % (index + 1))
        unknown = sorted(set(check) - set(CHECK_KEYS))
        if unknown:
            raise RecoveryError('check #%d has unknown keys: %s' % (index + 1, ', '.join(unknown)))
        name = check.get('name')
        sql = check.get('sql')
        if not isinstance(name, str) or not name.strip():
            raise RecoveryError('check #%d needs a name' % (index + 1))
        if name in names:
            raise RecoveryError('check name %r is used twice' % name)
        names.add(name)
        if not isinstance(sql, str) or not sql.strip().rstrip(';').strip():
            raise RecoveryError('check %s needs an SQL statement (sql)' % name)
        compare = check.get('compare') or 'eq'
        if compare not in COMPARES:
            raise RecoveryError('check %s: compare must be one of %s, not %r' % (name, ', '.join(COMPARES), compare))
        expect = check.get('expect')
        if isinstance(expect, (dict, list)):
            raise RecoveryError('check %s: expect must be a single value, not %s' % (name, type(expect).__name__))
        if expect is not None and compare not in ('eq', 'ne') and _number(expect) is None:
            raise RecoveryError('check %s: compare %s needs a number as expect, not %r' % (name, compare, expect))
        expect_rows = check.get('expect_rows')
        if expect_rows is not None:
            if isinstance(expect_rows, bool) or _number(expect_rows) is None or _number(expect_rows) < 0 \
                    or _number(expect_rows) != int(_number(expect_rows)):
                raise RecoveryError('check %s: expect_rows must be a whole number >= 0, not %r' % (name, expect_rows))
            expect_rows = int(_number(expect_rows))
        found.append({'name': name, 'sql': sql.strip(), 'expect': expect, 'compare': compare,
                      'expect_rows': expect_rows})
    return found


def evaluate(check, rows):
    """(ok, actual, reason) of a check over its rows (lists of text or None)."""
    actual = rows[0][0] if rows and rows[0] else None
    reasons = []
    if check.get('expect') is not None:
        ok, reason = compare_values(actual, check['expect'], check['compare'])
        if not ok:
            reasons.append(reason)
    if check.get('expect_rows') is not None:
        ok, reason = compare_values(str(len(rows)), check['expect_rows'], check['compare'])
        if not ok:
            reasons.append('%d rows, expected %s %s' % (len(rows), check['compare'], check['expect_rows']))
    if check.get('expect') is None and check.get('expect_rows') is None:
        if not rows:
            reasons.append('no row returned (a check without expect needs rows whose first column is true)')
        else:
            untrue = [row[0] if row else None for row in rows if not row or _boolean(row[0]) is not True]
            if untrue:
                reasons.append('%d of %d rows have a first column that is not true (first: %r)' % (
                    len(untrue), len(rows), untrue[0]))
    return not reasons, actual, '; '.join(reasons) or None


def parse_rows(text, null_text):
    """Rows of psql's csv output (without header); ``null_text`` marks NULL."""
    rows = []
    for row in csv.reader(io.StringIO(text + '\n')):
        # psql writes a lone empty field as an empty line
        cells = row if row else ['']
        rows.append([None if cell == null_text else cell for cell in cells])
    return rows


def _raw(session, text):
    """Send psql input as it is (meta-commands included) and read its output up to the marker."""
    session.proc.write(('%s\n\\echo %s\n' % (text, session.marker)).encode('utf-8'))
    return session.receive()


def _literal(text):
    return "'%s'" % text.replace("'", "''")


def query_rows(db, sql, timeout=None):
    """Rows of one statement run in a READ ONLY transaction of its own session.

    The statement reaches the server through psql's \\gexec from a string literal, so psql itself
    never interprets it (no meta-commands, no variables); the session's default is read-only too.
    """
    token = uuid.uuid4().hex
    null_text, begin, end = '__idp_null_%s__' % token, '__idp_begin_%s__' % token, '__idp_end_%s__' % token
    statement = sql.strip().rstrip(';').strip()
    setup = ['\\pset format csv', '\\pset null %s' % null_text,
             'SET default_transaction_read_only = on;', 'SET standard_conforming_strings = on;']
    if timeout:
        setup.append("SET statement_timeout = '%ds';" % int(timeout))
    setup.append('BEGIN TRANSACTION READ ONLY;')
    with db.session() as session:
        _raw(session, '\n'.join(setup))
        out = _raw(session, '\\echo %s\nSELECT %s \\gexec\n\\echo %s' % (begin, _literal(statement), end))
    start = out.find(begin + '\n')
    stop = out.rfind(end)
    if start < 0 or stop < 0:
        raise RecoveryError('unexpected psql output for check statement: %s' % out[:200])
    body = out[start + len(begin) + 1:stop]
    if not body:
        return []
    return parse_rows(body[:-1] if body.endswith('\n') else body, null_text)


def run_check(db, check, timeout=None):
    """The result of one check (never raises for a failing or failed statement)."""
    result = {'name': check['name'], 'sql': check['sql'], 'expect': check['expect'], 'compare': check['compare'],
              'expect_rows': check['expect_rows'], 'actual': None, 'rows': None, 'ok': False}
    started = time.monotonic()
    try:
        rows = query_rows(db, check['sql'], timeout)
    except RecoveryError as exc:
        result['error'] = exc.msg
        result['message'] = 'the statement failed: %s' % exc.msg
    else:
        ok, actual, reason = evaluate(check, rows)
        result.update(ok=ok, actual=actual, rows=len(rows))
        if reason:
            result['message'] = reason
    result['seconds'] = round(time.monotonic() - started, 3)
    return result


def checks_summary(results):
    failed = [item for item in results if not item['ok']]
    if not failed:
        return None
    return '%d of %d checks failed: %s' % (len(failed), len(results), '; '.join(
        '%s (%s)' % (item['name'], item.get('message') or 'failed') for item in failed))
