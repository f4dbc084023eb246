#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: metrics_textfile
short_description: Write a Prometheus textfile for node_exporter's textfile collector
version_added: 0.1.0
description:
  - Writes the metrics of O(metrics) to O(path) in the Prometheus text exposition format, for node_exporter's
    C(--collector.textfile.directory). The file is replaced through a temporary file in the same directory and a
    rename, so the collector never reads half a file.
  - Metric names must match C([a-zA-Z_:][a-zA-Z0-9_:]*) and label names C([a-zA-Z_][a-zA-Z0-9_]*) (not starting
    with C(__)); anything else fails the task before a file is touched. Label values are escaped (backslash, double
    quote, newline), as are backslashes and newlines in the help texts, so any value is safe.
  - Entries with the same name are one metric with several samples; they must share their help text and type, and
    no two of them may carry the same labels. The metrics are written in the order their names first appear, the
    samples in the order given.
  - This is the writer the collection's drill report uses for its own metrics; the backup and pitr roles use this
    module for theirs.
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
  - idp.recovery.attributes.IDEMPOTENT
attributes:
  check_mode:
    support: full
    details:
      - Reports whether the file would change and writes nothing.
  diff_mode:
    support: full
    details:
      - The diff shows the file's content before and after.
  idempotent:
    support: full
    details:
      - The file is rewritten, and the task changed, only when its content or its mode differs.
options:
  path:
    description:
      - The textfile to write, usually C(<textfile directory>/<name>.prom). Its directory must exist.
    type: path
    required: true
  metrics:
    description:
      - The samples to write, one entry each.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - The metric name, for example C(idp_recovery_backup_last_success_timestamp_seconds).
        type: str
        required: true
      help:
        description:
          - What the metric means, written as its C(# HELP) line.
        type: str
        required: true
      type:
        description:
          - The metric type, written as its C(# TYPE) line.
        type: str
        choices: [gauge, counter]
        default: gauge
      value:
        description:
          - The sample value, an integer or a float (a numeric string is taken as its number; V(NaN), V(+Inf) and
            V(-Inf) are allowed). A boolean is written as V(1) or V(0). A counter cannot be negative.
          - Omitted or null, the metric is declared (its C(# HELP) and C(# TYPE) lines) without this sample, for a
            value not known yet, such as the time of a first success.
        type: raw
      labels:
        description:
          - Label names and their values. Values are written as strings (numbers as their decimal text, booleans as
            V(true) or V(false)).
        type: dict
  mode:
    description:
      - Mode of O(path), octal as a string or an integer. The file holds no secret and node_exporter must read it.
    type: raw
    default: '0644'
seealso:
  - module: idp.recovery.drill_report
  - name: Prometheus text exposition format
    description: The format of the file.
    link: https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
  - name: node_exporter textfile collector
    description: How node_exporter reads the file.
    link: https://github.com/prometheus/node_exporter#textfile-collector
'''

EXAMPLES = r'''
- name: Publish the result of the last backup of each service
  idp.recovery.metrics_textfile:
    path: /var/lib/prometheus/node-exporter/idp_recovery_backup.prom
    metrics:
      - name: idp_recovery_backup_result
        help: 'Result of the service''s last backup run: 1 success, 0 failure.'
        value: 1
        labels: {service: authentik, kind: authentik}
      - name: idp_recovery_backup_result
        help: 'Result of the service''s last backup run: 1 success, 0 failure.'
        value: 0
        labels: {service: ory, kind: ory}
      - name: idp_recovery_backup_size_bytes
        help: Size of the set written by the service's last backup run.
        value: 73400320
        labels: {service: authentik, kind: authentik}

- name: Declare a timestamp that has no value yet
  idp.recovery.metrics_textfile:
    path: /var/lib/prometheus/node-exporter/idp_recovery_pitr_main.prom
    mode: '0640'
    metrics:
      - name: idp_recovery_pitr_last_backup_timestamp_seconds
        help: Unix time of the end of the newest backup of the stanza, by type.
        value: null
        labels: {stanza: main}
'''

RETURN = r'''
path:
  description: The absolute path of the textfile.
  returned: always
  type: str
  sample: /var/lib/prometheus/node-exporter/idp_recovery_backup.prom
metrics:
  description: The number of entries of O(metrics).
  returned: always
  type: int
  sample: 3
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._metrics.textfile import metrics_textfile
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module


def run(module):
    return metrics_textfile(module.params, module.check_mode, module._diff)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            metrics=dict(type='list', elements='dict', required=True, options=dict(
                name=dict(type='str', required=True),
                help=dict(type='str', required=True),
                type=dict(type='str', choices=['gauge', 'counter'], default='gauge'),
                value=dict(type='raw'),
                labels=dict(type='dict'),
            )),
            mode=dict(type='raw', default='0644'),
        ),
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == '__main__':
    main()
