# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Ory's published OpenAPI specs, as the contract of the Ory admin API stand-in.

The specs are read from the directory named by ``ORY_SPECS_DIR``, else from
``<repository>/../shared/specs/ory`` (see its SOURCES.txt); they are never copied into this
repository. This module finds the operation of a request (method + path template), its
rate-limit bucket (``x-ory-ratelimit-bucket``), and validates JSON bodies against the
operation's schemas:

* request bodies strictly, like Ory's decoders: an unknown field anywhere in a typed object is an
  error (free-form values such as ``traits`` or ``metadata_public`` accept anything);
* response bodies leniently: declared fields must have the declared types, required fields
  must be present.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

SPEC_FILES = {
    'kratos': 'ory-kratos__spec_api.json',
    'hydra': 'ory-hydra__spec_api.json',
    'keto': 'ory-keto__spec_api.json',
    'console': 'ory-sdk__client_v1.22.65.json',
}
THRESHOLDS = 'ory-docs__ratelimit_bucket-to-threshold.csv'
BUCKET_ENDPOINTS = 'ory-docs__ratelimit_bucket-to-endpoints.csv'


def spec_dir():
    configured = os.environ.get('ORY_SPECS_DIR')
    if configured:
        path = Path(configured)
    else:
        # beside the repository, or beside a directory above it (a clone in a subdirectory)
        candidates = [parent / 'shared' / 'specs' / 'ory' for parent in REPO.parents]
        path = next((c for c in candidates if (c / SPEC_FILES['kratos']).is_file()), candidates[0])
    if not (path / SPEC_FILES['kratos']).is_file():
        raise FileNotFoundError('the Ory OpenAPI specs are not in %s (set ORY_SPECS_DIR to the directory holding %s)'
                                % (path, ', '.join(sorted(SPEC_FILES.values()))))
    return path


class ContractError(ValueError):
    """A body does not match the schema of the spec."""


class Spec(object):
    """One OpenAPI document with a schema validator."""

    def __init__(self, path):
        with open(str(path)) as handle:
            self.doc = json.load(handle)
        self.name = Path(path).name
        self.schemas = self.doc.get('components', {}).get('schemas', {})
        self.responses = self.doc.get('components', {}).get('responses', {})
        self._routes = []
        self._resolved = {}
        for template, ops in self.doc.get('paths', {}).items():
            pattern = re.compile('^' + re.sub(r'\\{[^}]+\\}', '([^/]+)', re.escape(template)) + '$')
            for method, op in ops.items():
                if method in ('get', 'put', 'post', 'patch', 'delete'):
                    self._routes.append((method.upper(), template, pattern, op))
        # concrete paths before templated ones (/admin/identities/by/external/{x} vs /admin/identities/{id})
        self._routes.sort(key=lambda r: (r[1].count('{'), -len(r[1])))

    def operation(self, method, path):
        """(path template, operation, path parameters) or None."""
        for op_method, template, pattern, op in self._routes:
            if op_method != method:
                continue
            match = pattern.match(path)
            if match:
                return template, op, match.groups()
        return None

    def operations(self):
        for method, template, _pattern, op in self._routes:
            yield method, template, op

    def resolve(self, schema):
        if not isinstance(schema, dict) or '$ref' not in schema:
            return schema
        first = schema['$ref']
        cached = self._resolved.get(first)
        if cached is not None:
            return cached
        seen = 0
        while isinstance(schema, dict) and '$ref' in schema:
            ref = schema['$ref']
            if not ref.startswith('#/components/schemas/'):
                raise ContractError('unsupported reference %s' % ref)
            schema = self.schemas[ref.rsplit('/', 1)[1]]
            seen += 1
            if seen > 50:
                raise ContractError('reference loop at %s' % ref)
        self._resolved[first] = schema
        return schema

    def schema(self, name):
        return self.schemas[name]

    def request_schema(self, op):
        body = op.get('requestBody') or {}
        content = body.get('content') or {}
        media = content.get('application/json')
        return media.get('schema') if media else None

    def response_schema(self, op, status):
        responses = op.get('responses') or {}
        resp = responses.get(str(status)) or responses.get('default')
        if resp is None:
            return None
        if '$ref' in resp:
            resp = self.responses[resp['$ref'].rsplit('/', 1)[1]]
        media = (resp.get('content') or {}).get('application/json')
        return media.get('schema') if media else None

    def validate(self, value, schema, strict, where='body'):
        """Raise ContractError naming the first mismatch."""
        schema = self.resolve(schema)
        if schema is None or schema == {}:
            return
        if value is None:
            if schema.get('nullable') or 'type' not in schema and 'properties' not in schema:
                return
            raise ContractError('%s: null is not allowed' % where)
        for sub in schema.get('allOf', []):
            self.validate(value, sub, strict, where)
        if 'oneOf' in schema or 'anyOf' in schema:
            options = schema.get('oneOf') or schema.get('anyOf')
            errors = []
            for sub in options:
                try:
                    self.validate(value, sub, strict, where)
                    break
                except ContractError as exc:
                    errors.append(str(exc))
            else:
                raise ContractError('%s matches none of the allowed shapes (%s)' % (where, '; '.join(errors[:3])))
        kind = schema.get('type')
        if kind is None and 'properties' in schema:
            kind = 'object'
        if kind == 'object':
            if not isinstance(value, dict):
                raise ContractError('%s must be an object' % where)
            props = schema.get('properties')
            for name in schema.get('required', []):
                if name not in value:
                    raise ContractError('%s: required field %s is missing' % (where, name))
            extra = schema.get('additionalProperties')
            for key, item in value.items():
                if props is not None and key in props:
                    self.validate(item, props[key], strict, '%s.%s' % (where, key))
                elif isinstance(extra, dict) and extra:
                    self.validate(item, extra, strict, '%s.%s' % (where, key))
                elif props is not None and (strict or extra is False) and not extra:
                    raise ContractError('%s: unknown field %s' % (where, key))
        elif kind == 'array':
            if not isinstance(value, list):
                raise ContractError('%s must be an array' % where)
            items = schema.get('items')
            if items:
                for index, item in enumerate(value):
                    self.validate(item, items, strict, '%s[%d]' % (where, index))
        elif kind == 'string':
            if not isinstance(value, str):
                raise ContractError('%s must be a string' % where)
            if 'pattern' in schema and value and not re.search(schema['pattern'], value):
                raise ContractError('%s does not match %s' % (where, schema['pattern']))
        elif kind == 'integer':
            if not isinstance(value, int) or isinstance(value, bool):
                raise ContractError('%s must be an integer' % where)
        elif kind == 'number':
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ContractError('%s must be a number' % where)
        elif kind == 'boolean':
            if not isinstance(value, bool):
                raise ContractError('%s must be a boolean' % where)
        if 'enum' in schema and value not in schema['enum']:
            raise ContractError('%s: %r is not one of %s' % (where, value, ', '.join(repr(e) for e in schema['enum'])))


def load_specs(directory=None):
    directory = Path(directory) if directory else spec_dir()
    return dict((name, Spec(directory / filename)) for name, filename in SPEC_FILES.items())


def load_thresholds(directory=None):
    """{(bucket, tier, env): (rpm, rps)} from Ory's published rate-limit table."""
    directory = Path(directory) if directory else spec_dir()
    table = {}
    with open(str(directory / THRESHOLDS)) as handle:
        for row in csv.DictReader(handle):
            table[(row['bucketname'], row['tier'], row['env'])] = (int(row['rpm']), int(row['rps']))
    return table


def load_bucket_endpoints(directory=None):
    """{(METHOD, path template): bucket} from Ory's published bucket table."""
    directory = Path(directory) if directory else spec_dir()
    table = {}
    with open(str(directory / BUCKET_ENDPOINTS)) as handle:
        for row in csv.DictReader(handle):
            table[(row['Method'], row['Path'])] = row['Bucket']
    return table
