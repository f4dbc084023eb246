# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Keto as ory/keto behaves: subject sets in checks and in list results, the depth limit, and what the
collection does with subject sets on the way through a backup and a restore.

The stand-in's Keto rows of tests/ory_standin/FIDELITY.md name these tests. The seed holds the shapes of
real permission models: ``Document:shared-<g>#viewers@Group:group-<g>#members``, groups nested two deep
(``group-<g>`` holds ``team-<g>``, which holds ``squad-<g>``, whose member is an identity), and
``Document:doc-<i>#viewers@User:<identity ID>#delegates`` (a subject set whose object is an identity).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ory_client import models

from ory_support import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import
from ory_support import read_json_payload_cli, remapped_tuples

IDENTITIES = 60
ROOT = Path(__file__).resolve().parents[2]


def _check(standin, namespace, obj, relation, subject, **extra):
    query = {'namespace': namespace, 'object': obj, 'relation': relation}
    if isinstance(subject, dict):
        query.update(('subject_set.%s' % k, v) for k, v in subject.items())
    else:
        query['subject_id'] = subject
    query.update(extra)
    status, _h, body = standin.api('GET', '/relation-tuples/check/openapi', query)
    assert status == 200, body
    return models.CheckPermissionResult.from_dict(body).allowed


def _group(name):
    return {'namespace': 'Group', 'object': name, 'relation': 'members'}


@pytest.fixture
def keto(ory_standin_factory):
    standin = ory_standin_factory(seed_identities=IDENTITIES)
    ids = standin.control('identity-ids')['ids']
    return standin, ids


def _member_of_squad(standin, squad):
    query = {'namespace': 'Group', 'object': squad, 'relation': 'members'}
    status, _h, body = standin.api('GET', '/relation-tuples', query)
    assert status == 200, body
    found = [t['subject_id'] for t in body['relation_tuples'] if t.get('subject_id')]
    assert len(found) == 1, body
    return found[0]


def _delegation(standin):
    """(the identity that delegates, its delegate, the document) of one seeded delegation."""
    status, _h, body = standin.api('GET', '/relation-tuples', {'namespace': 'User', 'relation': 'delegates'})
    assert status == 200 and body['relation_tuples'], body
    first = body['relation_tuples'][0]
    status, _h, docs = standin.api('GET', '/relation-tuples', {
        'namespace': 'Document', 'relation': 'viewers', 'subject_set.namespace': 'User',
        'subject_set.object': first['object'], 'subject_set.relation': 'delegates'})
    assert status == 200 and len(docs['relation_tuples']) == 1, docs
    return first['object'], first['subject_id'], docs['relation_tuples'][0]['object']


# ---------------------------------------------------------------------------------------------
# the stand-in against ory/keto

def test_check_with_a_subject_set_as_the_subject(keto):
    standin, _ids = keto
    # the stored tuple itself: Document:shared-1#viewers@Group:group-1#members
    assert _check(standin, 'Document', 'shared-1', 'viewers', _group('group-1')) is True
    assert _check(standin, 'Document', 'shared-1', 'view', _group('group-1')) is True
    # another group's members are not viewers of shared-1
    assert _check(standin, 'Document', 'shared-1', 'view', _group('group-2')) is False
    # squad-0 is inside team-0, inside group-0: its members may view shared-0, not shared-1
    assert _check(standin, 'Document', 'shared-0', 'view', _group('squad-0')) is True
    assert _check(standin, 'Document', 'shared-1', 'view', _group('squad-0')) is False
    # a subject set matches only with all three parts: another relation is another subject
    assert _check(standin, 'Document', 'shared-1', 'viewers',
                  {'namespace': 'Group', 'object': 'group-1', 'relation': 'owners'}) is False


def test_check_expands_nested_subject_sets_up_to_the_depth_limit(keto):
    standin, _ids = keto
    member = _member_of_squad(standin, 'squad-0')
    # Document:shared-0#viewers -> Group:group-0#members -> Group:team-0#members -> Group:squad-0#members -> member
    assert _check(standin, 'Document', 'shared-0', 'view', member) is True
    assert _check(standin, 'Group', 'group-0', 'members', member) is True
    assert _check(standin, 'Document', 'shared-3', 'view', member) is False
    # the request's max-depth limits the expansion; 0 means the server's limit
    assert _check(standin, 'Document', 'shared-0', 'view', member, **{'max-depth': 3}) is False
    assert _check(standin, 'Document', 'shared-0', 'view', member, **{'max-depth': 4}) is True
    assert _check(standin, 'Document', 'shared-0', 'view', member, **{'max-depth': 0}) is True
    # a direct tuple needs a depth of 2 (checkDirect runs at depth - 1)
    owner_tuple = next(t for t in standin.all_tuples() if t['namespace'] == 'Document' and t['relation'] == 'owners')
    assert _check(standin, 'Document', owner_tuple['object'], 'owners', owner_tuple['subject_id'], **{'max-depth': 1}) is False
    assert _check(standin, 'Document', owner_tuple['object'], 'owners', owner_tuple['subject_id'], **{'max-depth': 2}) is True
    # a chain deeper than the server's limit (5) is denied whatever max-depth the request asks for
    chain = ['deep-%d' % n for n in range(6)]
    body = [{'action': 'insert', 'relation_tuple': {'namespace': 'Group', 'object': outer, 'relation': 'members',
                                                    'subject_set': _group(inner)}}
            for outer, inner in zip(chain, chain[1:])]
    body.append({'action': 'insert', 'relation_tuple': {'namespace': 'Group', 'object': chain[-1], 'relation': 'members',
                                                        'subject_id': 'deep-member'}})
    status, _h, answer = standin.api('PATCH', '/admin/relation-tuples', body=body)
    assert status == 204, answer
    assert _check(standin, 'Group', chain[2], 'members', 'deep-member') is True
    assert _check(standin, 'Group', chain[0], 'members', 'deep-member', **{'max-depth': 10}) is False
    # a cycle of subject sets ends
    status, _h, answer = standin.api('PATCH', '/admin/relation-tuples', body=[
        {'action': 'insert', 'relation_tuple': {'namespace': 'Group', 'object': 'loop-a', 'relation': 'members',
                                                'subject_set': _group('loop-b')}},
        {'action': 'insert', 'relation_tuple': {'namespace': 'Group', 'object': 'loop-b', 'relation': 'members',
                                                'subject_set': _group('loop-a')}}])
    assert status == 204, answer
    assert _check(standin, 'Group', 'loop-a', 'members', 'deep-member') is False


def test_check_through_a_subject_set_whose_object_is_an_identity(keto):
    standin, _ids = keto
    delegator, delegate, document = _delegation(standin)
    assert _check(standin, 'Document', document, 'view', delegate) is True
    assert _check(standin, 'Document', document, 'view', {'namespace': 'User', 'object': delegator,
                                                          'relation': 'delegates'}) is True
    assert _check(standin, 'Document', document, 'view', delegator) is False


def test_check_parameters_as_keto_reads_them(keto):
    standin, ids = keto
    base = {'namespace': 'Document', 'object': 'shared-1', 'relation': 'view'}
    refused = [
        dict(base),  # no subject
        dict(base, subject_id=ids[0], **{'subject_set.namespace': 'Group', 'subject_set.object': 'group-1',
                                         'subject_set.relation': 'members'}),
        dict(base, **{'subject_set.namespace': 'Group', 'subject_set.object': 'group-1'}),
        dict(base, subject=ids[0]),
        {'namespace': 'Document', 'relation': 'view', 'subject_id': ids[0]},
    ]
    for query in refused:
        status, _h, body = standin.api('GET', '/relation-tuples/check/openapi', query)
        assert status == 400, (query, body)
        assert body['error']['code'] == 400
    # an unknown namespace is "not allowed", not an error
    status, _h, body = standin.api('GET', '/relation-tuples/check/openapi', {
        'namespace': 'Nope', 'object': 'x', 'relation': 'y', 'subject_id': ids[0]})
    assert status == 200 and body == {'allowed': False}, body


def test_list_results_and_subject_set_queries(keto):
    standin, ids = keto
    status, _h, body = standin.api('GET', '/relation-tuples', {
        'namespace': 'Document', 'subject_set.namespace': 'Group', 'subject_set.object': 'group-1',
        'subject_set.relation': 'members'})
    assert status == 200, body
    page = models.Relationships.from_dict(body)
    assert [(t.object, t.relation) for t in page.relation_tuples] == [('shared-1', 'viewers')]
    item = body['relation_tuples'][0]
    # the JSON shape: subject_set with its three parts, and no subject_id key at all
    assert item == {'namespace': 'Document', 'object': 'shared-1', 'relation': 'viewers',
                    'subject_set': {'namespace': 'Group', 'object': 'group-1', 'relation': 'members'}}
    # a subject ID query finds only tuples with that subject ID
    member = _member_of_squad(standin, 'squad-1')
    status, _h, body = standin.api('GET', '/relation-tuples', {'namespace': 'Group', 'subject_id': member})
    assert status == 200 and body['relation_tuples'], body
    assert all(t.get('subject_id') == member and 'subject_set' not in t for t in body['relation_tuples'])
    # nested groups list as subject sets
    status, _h, body = standin.api('GET', '/relation-tuples', {'namespace': 'Group', 'object': 'team-2'})
    assert status == 200, body
    assert body['relation_tuples'] == [{'namespace': 'Group', 'object': 'team-2', 'relation': 'members',
                                        'subject_set': _group('squad-2')}]
    for query in ({'namespace': 'Group', 'subject_set.namespace': 'Group'},
                  {'namespace': 'Group', 'subject_id': ids[0], 'subject_set.namespace': 'Group',
                   'subject_set.object': 'a', 'subject_set.relation': 'members'},
                  {'namespace': 'Group', 'subject': ids[0]}):
        status, _h, body = standin.api('GET', '/relation-tuples', query)
        assert status == 400, (query, body)


# ---------------------------------------------------------------------------------------------
# the collection: ory_check, ory_import and the files for the stock CLI

def _export(run_module, source, keys, root):
    opened = run_module('backup_set', root=str(root), service='ory', kind='ory', state='present')
    assert not opened.get('failed'), opened
    exported = run_module('ory_export', set_dir=opened['path'], recipients=[keys.age_recipient], **source.connection())
    assert not exported.get('failed'), exported
    assert not run_module('backup_set', path=opened['path'], state='finalized').get('failed')
    return Path(opened['path'])


def test_import_remaps_subject_sets_and_checks_pass(ory_standin_factory, run_module, keys, tmp_path):
    source = ory_standin_factory(seed_identities=IDENTITIES, seed_clients=1)
    target = ory_standin_factory(preset='blank')
    delegator, delegate, document = _delegation(source)
    member = _member_of_squad(source, 'squad-0')
    set_dir = _export(run_module, source, keys, tmp_path / 'backups')
    done = run_module('ory_import', set_dir=str(set_dir), identity=str(keys.age_identity), return_secrets=True,
                      state_dir=str(tmp_path / 'state'), **target.connection())
    assert not done.get('failed'), done
    id_map = json.loads(Path(done['id_map']).read_text())
    assert len(id_map) == IDENTITIES
    got = set(json.dumps(t, sort_keys=True) for t in target.all_tuples())
    assert got == remapped_tuples(source.all_tuples(), id_map)
    text = '\n'.join(got)
    assert not [old for old in id_map if old in text]  # no old identity ID anywhere, in any place

    # the drill's checks, through subject sets, with the new IDs
    checks = run_module('ory_check', permissions=[
        {'namespace': 'Document', 'object': 'shared-0', 'relation': 'view', 'subject_id': id_map[member], 'allowed': True},
        {'namespace': 'Document', 'object': 'shared-0', 'relation': 'view', 'subject_set': _group('squad-0'),
         'allowed': True},
        {'namespace': 'Document', 'object': 'shared-1', 'relation': 'view', 'subject_set': _group('squad-0'),
         'allowed': False},
        {'namespace': 'Document', 'object': document, 'relation': 'view', 'subject_id': id_map[delegate], 'allowed': True},
        {'namespace': 'Document', 'object': document, 'relation': 'view',
         'subject_set': {'namespace': 'User', 'object': id_map[delegator], 'relation': 'delegates'}, 'allowed': True},
        {'namespace': 'Document', 'object': 'shared-0', 'relation': 'view', 'subject_id': id_map[member], 'max_depth': 3,
         'allowed': False},
    ], **target.connection())
    assert not checks.get('failed'), checks
    assert [c['answer'] for c in checks['permissions']] == [True, True, False, True, True, False]

    bad = run_module('ory_check', permissions=[{'namespace': 'Document', 'object': 'shared-0', 'relation': 'view',
                                                'subject_set': {'namespace': 'Group', 'object': 'squad-0'},
                                                'allowed': True}], **target.connection())
    assert bad.get('failed') and 'subject_set needs namespace, object and relation' in bad['msg'], bad
    both = run_module('ory_check', permissions=[{'namespace': 'Document', 'object': 'shared-0', 'relation': 'view',
                                                 'subject_id': 'x', 'subject_set': _group('squad-0'), 'allowed': True}],
                      **target.connection())
    assert both.get('failed') and 'exactly one of subject_id and subject_set' in both['msg'], both


def test_relationships_file_for_the_stock_cli_names_the_new_ids(ory_standin_factory, run_module, keys, tmp_path):
    """A restore of the tuples with the stock CLI: the import restores everything but the tuples and writes
    <state_dir>/relationships.json with the new IDs; written to the project as the CLI writes them, the
    tuples are those of the source with the new IDs and the checks pass."""
    source = ory_standin_factory(seed_identities=IDENTITIES, seed_clients=1)
    target = ory_standin_factory(preset='blank')
    delegator, delegate, document = _delegation(source)
    set_dir = _export(run_module, source, keys, tmp_path / 'backups')
    state = tmp_path / 'state'
    done = run_module('ory_import', set_dir=str(set_dir), identity=str(keys.age_identity), return_secrets=True,
                      include=['config', 'identities', 'oauth2_clients', 'jwks'], state_dir=str(state),
                      **target.connection())
    assert not done.get('failed'), done
    assert target.summary()['tuples'] == 0
    path = state / 'relationships.json'
    assert done['relationships_file'] == str(path)
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    tuples = json.loads(path.read_text())
    assert all(models.Relationship.from_dict(t) for t in tuples)
    id_map = json.loads(Path(done['id_map']).read_text())
    assert set(json.dumps(t, sort_keys=True) for t in tuples) == remapped_tuples(source.all_tuples(), id_map)
    assert not [old for old in id_map if old in path.read_text()]

    # the bundle's own restore/relationships.json still holds the old IDs (it was written before the import)
    rel = next(p for p in (set_dir / 'ory' / 'restore').iterdir() if p.name.startswith('relationships.json'))
    old = read_json_payload_cli(rel, keys.age_identity)
    assert any(t.get('subject_id') in id_map for t in old)

    # `ory create relationships <file>` inserts each tuple of the file
    status, _h, body = target.api('PATCH', '/admin/relation-tuples',
                                  body=[{'action': 'insert', 'relation_tuple': t} for t in tuples])
    assert status == 204, body
    assert set(json.dumps(t, sort_keys=True) for t in target.all_tuples()) == remapped_tuples(source.all_tuples(), id_map)
    checks = run_module('ory_check', permissions=[
        {'namespace': 'Document', 'object': document, 'relation': 'view', 'subject_id': id_map[delegate], 'allowed': True},
        {'namespace': 'Document', 'object': document, 'relation': 'view',
         'subject_set': {'namespace': 'User', 'object': id_map[delegator], 'relation': 'delegates'}, 'allowed': True},
        {'namespace': 'Document', 'object': document, 'relation': 'view', 'subject_id': delegate, 'allowed': False},
    ], **target.connection())
    assert not checks.get('failed'), checks


def _doc_block(heading):
    """The shell commands of the code block below ``heading`` in docs/ory.md."""
    text = (ROOT / 'docs' / 'ory.md').read_text()
    start = text.index(heading)
    block = text.index('```sh\n', start) + len('```sh\n')
    return text[block:text.index('```', block)]


def test_documented_cli_remap_of_the_bundle_file(ory_standin_factory, run_module, keys, tmp_path):
    """Without the collection at hand: the documented jq commands remap the bundle's relationships.json
    with the identities the target holds (old ID in external_id), run as documented."""
    source = ory_standin_factory(seed_identities=IDENTITIES, seed_clients=1)
    target = ory_standin_factory(preset='blank')
    set_dir = _export(run_module, source, keys, tmp_path / 'backups')
    done = run_module('ory_import', set_dir=str(set_dir), identity=str(keys.age_identity), return_secrets=True,
                      include=['config', 'identities'], state_dir=str(tmp_path / 'state'), **target.connection())
    assert not done.get('failed'), done
    work = tmp_path / 'cli'
    work.mkdir()
    restore = set_dir / 'ory' / 'restore'
    for name in ('relationships.json', 'identity-index.json'):
        rel = next(p for p in restore.iterdir() if p.name.startswith(name))
        (work / name).write_text(json.dumps(read_json_payload_cli(rel, keys.age_identity)))
    # what `ory list identities --format json` prints: the target's identities
    (work / 'identities-now.json').write_text(json.dumps(target.all_identities(credentials=())))
    script = _doc_block('Remapping the tuples by hand')
    assert 'jq' in script
    proc = subprocess.run(['bash', '-euo', 'pipefail', '-c', script], cwd=str(work), capture_output=True,
                          env=dict(os.environ), check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    tuples = json.loads((work / 'relationships.remapped.json').read_text())
    id_map = json.loads(Path(done['id_map']).read_text())
    assert set(json.dumps(t, sort_keys=True) for t in tuples) == remapped_tuples(source.all_tuples(), id_map)
