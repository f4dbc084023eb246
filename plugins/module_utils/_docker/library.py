# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the optional Docker SDK for Python, imported once for the Docker utilities."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

__all__ = ('APIError', 'DockerException', 'HAS_DOCKER', 'NotFound', 'docker')

try:
    import docker
    from docker.errors import APIError, DockerException, NotFound
    HAS_DOCKER = True
except ImportError:
    docker = None
    HAS_DOCKER = False

    class DockerException(Exception):
        """Stands in for the library's errors, which nothing raises without it."""

    APIError = NotFound = DockerException
