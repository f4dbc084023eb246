# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the integration tests do when something they need is not there.

One rule for every test module:

* ``not_installed(reason)``: a tool, image or service that ``make setup`` installs or starts
  (Docker, rclone, sshd, rsync, openssl, the test images). Its absence is always a failure: the
  suite was not prepared, and a skip would count a test that never ran.
* ``not_permitted(reason)``: a privilege the machine may not grant (mounting a tmpfs, running sshd
  as root). A failure in CI, where the machine is known to grant it; a skip elsewhere, with the
  reason in pytest's summary.

``in_ci()`` reads ``CI`` the way CI services set it: any value but empty, ``0``, ``false``, ``no``
or ``off`` (in any case) means CI.
"""

from __future__ import annotations

import os

import pytest

_FALSE = ('', '0', 'false', 'no', 'off')


def in_ci():
    return os.environ.get('CI', '').strip().lower() not in _FALSE


def not_installed(reason):
    """Something `make setup` provides is missing: always a failure."""
    pytest.fail('%s; run `make setup`' % reason)


def not_permitted(reason):
    """A privilege is missing: a failure in CI, a skip elsewhere."""
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)
