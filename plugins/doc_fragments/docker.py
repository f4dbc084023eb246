# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    # The options of docker_argument_spec() (module_utils/_docker/engine.py). Every module that reaches a
    # Docker engine adds that spec to its own and extends this fragment: idp.recovery.docker
    DOCUMENTATION = r'''
options:
  docker_host:
    description:
      - Docker engine to talk to. Defaults to E(DOCKER_HOST), else C(unix:///var/run/docker.sock).
    type: str
'''
