# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Helpers of the integration tests: sample trees, tree snapshots, stock-tool pipelines."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import stat
import subprocess
from pathlib import Path

UNICODE_NAME = 'ünïcödé 日本 ✓.txt'
TEMP_TAGS = ('.partial-', '.extract-', '.old-')

SUFFIX = {
    'zstd': '.zst', 'gzip': '.gz', 'none': '',
    'age': '.age', 'ssh': '.age', 'gpg': '.gpg', 'passphrase': '.gpg',
}


def random_file(path, size, seed=None):
    """A file of ``size`` bytes that does not compress."""
    path = Path(path)
    with open(str(path), 'wb') as handle:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 1024 * 1024))
            handle.write(chunk)
            remaining -= len(chunk)
    return path


def make_tree(root):
    """A source tree with nested directories, symbolic links, a hard link, an empty file,
    a 0640 file, a 0750 directory and a unicode name."""
    root = Path(root)
    root.mkdir(parents=True)
    (root / 'top.txt').write_bytes(b'top level line\n' * 500)
    (root / 'empty').write_bytes(b'')
    secret = root / 'secret.conf'
    secret.write_bytes(b'SECRET_KEY=not-really\n')
    secret.chmod(0o640)
    (root / UNICODE_NAME).write_text('unicode content ✓\n', encoding='utf-8')
    deepest = root / 'nested' / 'deeper' / 'deepest'
    deepest.mkdir(parents=True)
    random_file(deepest / 'file.bin', 200 * 1024)
    (deepest / 'script.sh').write_bytes(b'#!/bin/sh\necho restored\n')
    (deepest / 'script.sh').chmod(0o755)
    os.symlink('deeper/deepest/file.bin', str(root / 'nested' / 'link'))
    os.symlink('deeper', str(root / 'nested' / 'dirlink'))
    os.link(str(root / 'top.txt'), str(root / 'nested' / 'hardlink.txt'))
    (root / 'emptydir').mkdir()
    (root / 'emptydir').chmod(0o750)
    root.chmod(0o755)
    return root


def snapshot(root):
    """Everything a restore must give back: names, types, modes, contents, link targets and
    which names share one file (hard links). Times and owners are left out."""
    root = Path(root)
    entries = {}
    inodes = {}
    for current, dirs, files in os.walk(str(root)):
        dirs.sort()
        for name in ['.'] if current == str(root) else []:
            entries[name] = ('d', stat.S_IMODE(os.lstat(current).st_mode))
        for name in sorted(dirs) + sorted(files):
            full = os.path.join(current, name)
            rel = os.path.relpath(full, str(root))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ('l', os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ('d', stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                first = inodes.setdefault((st.st_dev, st.st_ino), rel)
                with open(full, 'rb') as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                entries[rel] = ('f', stat.S_IMODE(st.st_mode), st.st_size, digest, first)
            else:
                entries[rel] = ('other', stat.S_IFMT(st.st_mode))
    return entries


def mode(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


def leftovers(directory):
    """Names in directory that an interrupted or failed write would leave behind."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(name for name in os.listdir(str(directory)) if any(tag in name for tag in TEMP_TAGS))


def listing(directory):
    """Every path below directory, relative, sorted (empty when it does not exist)."""
    directory = Path(directory)
    found = []
    for current, dirs, files in os.walk(str(directory)):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(current, name), str(directory)))
    return sorted(found)


def sha256sum_check(set_dir, env=None):
    return subprocess.run(['sha256sum', '--strict', '-c', 'MANIFEST.sha256'], cwd=str(set_dir), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False)


def reseal(set_dir, *rels):
    """Make the set agree with its changed files ``rels`` again, as whoever can rewrite the whole set
    can: the recorded size and SHA-256 in metadata.json, then the manifest lines of ``rels`` and of
    metadata.json. What is left to catch a forgery is decryption and the content checks."""
    set_dir = Path(set_dir)
    metadata_path = set_dir / 'metadata.json'
    metadata = json.loads(metadata_path.read_text())
    for rel in rels:
        data = (set_dir / rel).read_bytes()
        info = metadata.setdefault('payloads', {}).get(rel)
        if info is not None:
            info.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + '\n')
    manifest = set_dir / 'MANIFEST.sha256'
    lines = []
    for line in manifest.read_text().splitlines():
        rel = line.split('  ', 1)[1]
        if rel in rels or rel == 'metadata.json':
            line = '%s  %s' % (hashlib.sha256((set_dir / rel).read_bytes()).hexdigest(), rel)
        lines.append(line)
    manifest.write_text('\n'.join(lines) + '\n')


def stock_decrypt_command(payload, encryption, compression, keys, passphrase_file=None):
    """A shell pipeline of stock tools only (age, gpg, zstd, gzip) that writes the plaintext to stdout."""
    quote = shlex.quote
    if encryption == 'age':
        decrypt = 'age -d -i %s %s' % (quote(str(keys.age_identity)), quote(str(payload)))
    elif encryption == 'ssh':
        decrypt = 'age -d -i %s %s' % (quote(str(keys.ssh_identity)), quote(str(payload)))
    elif encryption == 'gpg':
        decrypt = 'gpg --batch --quiet --homedir %s -d %s' % (quote(str(keys.gpg_home)), quote(str(payload)))
    elif encryption == 'passphrase':
        decrypt = 'gpg --batch --quiet --homedir %s --pinentry-mode loopback --passphrase-file %s -d %s' % (
            quote(str(keys.gpg_home)), quote(str(passphrase_file)), quote(str(payload)))
    else:
        decrypt = 'cat %s' % quote(str(payload))
    decompress = {'zstd': ' | zstd -d -c', 'gzip': ' | gzip -d -c', 'none': ''}[compression]
    return decrypt + decompress


def run_shell(command, env=None, cwd=None):
    return subprocess.run(['bash', '-o', 'pipefail', '-c', command], env=env, cwd=cwd and str(cwd),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False)


def encryption_args(encryption, keys, passphrase=None):
    """Module arguments that write a payload with ``encryption`` (age, ssh, gpg, passphrase)."""
    if encryption == 'age':
        return {'encryption': 'age', 'recipients': [keys.age_recipient]}
    if encryption == 'ssh':
        return {'encryption': 'age', 'recipients': [keys.ssh_recipient]}
    if encryption == 'gpg':
        return {'encryption': 'gpg', 'recipients': [keys.gpg_fpr], 'gpg_homedir': str(keys.gpg_home)}
    if encryption == 'passphrase':
        return {'encryption': 'passphrase', 'passphrase': passphrase}
    return {'encryption': 'none', 'allow_unencrypted': True}


def decryption_args(encryption, keys, passphrase=None):
    """Module arguments that read a payload written with ``encryption``."""
    if encryption == 'age':
        return {'identity': str(keys.age_identity)}
    if encryption == 'ssh':
        return {'identity': str(keys.ssh_identity)}
    if encryption == 'gpg':
        return {'gpg_homedir': str(keys.gpg_home)}
    if encryption == 'passphrase':
        return {'passphrase': passphrase}
    return {}


def _proc_stat(pid):
    """(state, ppid, pgrp) of a process, or None when it is gone."""
    try:
        with open('/proc/%s/stat' % pid, 'rb') as handle:
            data = handle.read().decode('utf-8', 'replace')
    except OSError:
        return None
    fields = data[data.rindex(')') + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def process_tree(pid):
    """pid and all its living descendants."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            found = _proc_stat(entry)
            if found and found[0] != 'Z':
                children.setdefault(found[1], []).append(int(entry))
    tree = [pid]
    for parent in tree:
        tree.extend(children.get(parent, []))
    return tree


def kill_tree(pid):
    """SIGKILL pid and its descendants (collected first, so that none escapes by reparenting)."""
    for member in process_tree(pid):
        try:
            os.kill(member, signal.SIGKILL)
        except OSError:
            pass


def pids_in_group(pgid):
    """Processes whose process group is pgid (zombies included)."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            stat_ = _proc_stat(entry)
            if stat_ and stat_[2] == pgid and stat_[0] != 'Z':
                found.append(int(entry))
    return found
