# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    # Connection and authentication options of the Ory modules.
    DOCUMENTATION = r'''
options:
  deployment:
    description:
      - V(network) for an Ory Network project, reached at O(project_url) with a project API key, its configuration
        read and written through the console API (O(console_url)) with a workspace API key.
      - V(self_hosted) for Ory Kratos, Hydra and Keto run by yourself, reached at O(kratos_admin_url),
        O(hydra_admin_url), O(hydra_public_url), O(keto_read_url) and O(keto_write_url) without authentication
        (a O(project_api_key) is still sent when given, for admin APIs behind an authenticating proxy).
    type: str
    choices: [network, self_hosted]
    default: network
  project_url:
    description:
      - The project's API base URL, C(https://<slug>.projects.oryapis.com). Serves the Kratos, Hydra and Keto APIs
        of an Ory Network project; the per-service URL options override it.
      - Defaults to the environment variable E(ORY_SDK_URL).
    type: str
  project_api_key:
    description:
      - The project API key (C(ory_pat_...)), sent as a bearer token to the Kratos, Hydra and Keto admin APIs and only
        to them.
      - Defaults to the environment variable E(ORY_PROJECT_API_KEY), then E(ORY_API_KEY).
    type: str
  project_id:
    description:
      - The ID of the Ory Network project, for the console API (project configuration).
      - Defaults to the environment variable E(ORY_PROJECT_ID).
    type: str
  console_url:
    description:
      - The Ory Network console API, which reads and writes the project configuration.
    type: str
    default: https://api.console.ory.sh
  workspace_api_key:
    description:
      - The workspace API key, sent only to O(console_url) and only by the configuration step.
      - Defaults to the environment variable E(ORY_WORKSPACE_API_KEY).
    type: str
  kratos_admin_url:
    description:
      - The Kratos admin API (self-hosted default port 4434).
    type: str
  hydra_admin_url:
    description:
      - The Hydra admin API (self-hosted default port 4445).
    type: str
  hydra_public_url:
    description:
      - The Hydra public API (self-hosted default port 4444), where tokens are minted.
    type: str
  keto_read_url:
    description:
      - The Keto read API (self-hosted default port 4466).
    type: str
  keto_write_url:
    description:
      - The Keto write API (self-hosted default port 4467). Defaults to O(keto_read_url) when that is the only one given.
    type: str
  validate_certs:
    description:
      - Verify the TLS certificates of the APIs.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for one answer before the request counts as timed out (and is retried).
    type: int
    default: 60
  max_retries:
    description:
      - How many times a request is repeated after a 5xx answer, a time-out or a dropped connection. Rate-limited
        requests (429) wait for C(x-ratelimit-reset) and are retried on their own budget.
    type: int
    default: 8
  max_backoff:
    description:
      - The cap, in seconds, of the exponential backoff (with jitter) between retries.
    type: float
    default: 30
notes:
  - API keys are C(no_log) options; they are never returned, logged or written anywhere, and each is sent only to the
    API it belongs to. Schema and OPL storage links are fetched without any key.
'''
