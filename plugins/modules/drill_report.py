#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: drill_report
short_description: Judge a restore drill against its RTO and RPO targets and write its JSON and HTML reports and metrics
version_added: 0.1.0
description:
  - Takes what a restore drill measured for each service (the set it fetched, the timed recovery steps, the checks
    run on the restored data) and decides the verdict. The drill passes only when every service has a set, no step
    and no check failed, the recovery time (RTO, the sum of the service's step times) is within O(rto_target) and the
    age of the set at the start of the drill (RPO, the data-loss window) is within O(rpo_target). A service without
    a set, or whose set time is unknown, fails. A set dated more than five minutes after the drill started fails
    too (its age would be negative, so a clock was wrong); one dated less than that counts as age 0, with a warning.
    A service with a set but no recorded step, or (with
    O(require_checks)) without any check, fails too, as nothing would prove its restore.
  - Writes C(<name>.json) and C(<name>.html) into O(dest_dir) (mode 0600, each through a temporary file and a
    rename), then replaces C(latest.json) and C(latest.html) there with copies of them. The HTML page is one
    self-contained file (inline CSS and SVG, no script, nothing fetched) with the verdict, the reasons, a bar chart
    of the step timings against the RTO target, and the checks. See the collection's C(docs/drill-report.md).
  - With O(metrics_file), writes a Prometheus textfile for node_exporter's textfile collector. The time of the last
    passed drill is carried over from the existing file when this drill failed.
  - The module needs no secret and writes none; O(context) is shown in the report as it is given.
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
attributes:
  check_mode:
    support: full
    details:
      - Computes the verdict and everything returned, with the paths that would be written, and writes nothing.
  diff_mode:
    support: none
options:
  dest_dir:
    description:
      - Directory of the reports; created with mode 0700 when missing.
    type: path
    required: true
  name:
    description:
      - Base name of the report files instead of C(drill-<UTC stamp of started>). Letters, digits, C(.), C(_) and
        C(-); C(latest) is reserved.
    type: str
    aliases: [report_name]
  started:
    description:
      - When the drill started, in epoch seconds. The age of each set is measured at this time.
    type: float
    required: true
  finished:
    description:
      - When the drill finished, in epoch seconds. Defaults to now.
    type: float
  rto_target:
    description:
      - The recovery time objective of each service, as seconds or a duration such as V(90s), V(45m), V(4h), V(1d),
        V(1h30m) or ISO-8601 V(PT4H), V(P1D).
    type: raw
    required: true
  rpo_target:
    description:
      - The recovery point objective, the largest acceptable age of a restored set, in the same forms as
        O(rto_target).
    type: raw
    required: true
  services:
    description:
      - One dict per drilled service with the keys C(name) (required, unique), C(kind), C(set) (the path of the set
        restored; empty when none was fetched), C(stamp), C(set_timestamp) (ISO-8601 UTC, epoch seconds or a set
        stamp; defaults to the time of C(stamp)), C(source) (where the set was fetched from), C(manifest_sha256) (the
        SHA-256 of the set's C(MANIFEST.sha256), which pins C(metadata.json) and every payload), C(target) (where it
        was restored), C(error) (the service's drill stopped early), C(steps) and C(checks).
      - C(steps) is a list of C({name, seconds, ok (default true), error, detail (dict), bytes, items, items_kind,
        benchmark}) in the order they ran. C(bytes) is what the step moved (downloaded, decrypted, restored), C(items)
        and C(items_kind) count what it handled otherwise (C(identities) for an Ory import); a step with either gets its
        throughput, one without shows its duration only. C(benchmark) names the step of the benchmark it is compared
        with (see O(benchmark_file)), or V(none); by default V(fetch) is compared with C(upload), V(verify) with
        C(read_test), V(restore) and V(import) with C(restore) (kinds C(authentik), C(postgres)), C(ory_import) (kind
        C(ory)) or C(pitr) (kind C(pitr)), and V(dump), V(encrypt), V(extract), V(upload) with the steps of those names.
      - C(checks) is a list of C({name, kind, ok (required), detail, expected, actual}). C(kind) is free text, for
        example C(row_counts), C(version), C(sql), C(http), C(ory_token), C(keto), C(identity), C(verify), C(guard).
    type: list
    elements: dict
    required: true
  context:
    description:
      - Facts shown in the report header, for example C(host), C(playbook), C(offsite) or C(mode). Never put secrets
        here; the report is meant to be handed to auditors.
    type: dict
    default: {}
  require_checks:
    description:
      - Fail a service that has a set and steps but no check at all.
    type: bool
    default: true
  benchmark_file:
    description:
      - The stock tools' benchmark (the collection's C(docs/performance.json), written by C(make bench)), on the host the
        module runs on. Each step's throughput is shown next to what the plain shell pipeline reached in it for the same
        kind of work, with the ratio, and the step with the largest share of the recovery time is marked as the one
        that limits it.
      - The file is read as untrusted input; at most 1 MiB, every value checked, and entries that do not fit are left
        out with the reason. A missing, unreadable or malformed file never fails the drill; the report says
        C(no benchmark on record) where the comparison would be.
      - With O(benchmark), only names where that content was read.
    type: path
  benchmark:
    description:
      - The benchmark's content (its JSON text, or the decoded object) when it was read elsewhere, for example on the
        controller; an empty string says it could not be read there. Checked as for O(benchmark_file).
    type: raw
  metrics_file:
    description:
      - Path of a Prometheus textfile to write (through a temporary file in the same directory and a rename), for
        node_exporter's C(--collector.textfile.directory). Its directory must exist.
      - 'Metrics (gauges): C(idp_recovery_drill_last_run_timestamp_seconds),
        C(idp_recovery_drill_last_success_timestamp_seconds), C(idp_recovery_drill_success),
        C(idp_recovery_drill_duration_seconds), and labelled C(service) and C(kind):
        C(idp_recovery_drill_rto_seconds), C(idp_recovery_drill_rpo_seconds), C(idp_recovery_drill_rto_target_seconds),
        C(idp_recovery_drill_rpo_target_seconds), C(idp_recovery_drill_service_success),
        C(idp_recovery_drill_checks_failed).'
    type: path
  metrics_mode:
    description:
      - Mode of O(metrics_file), octal as a string or an integer. It holds no secret and the collector must read it.
    type: raw
    default: '0644'
  fail_on_failure:
    description:
      - Fail the task, after writing every file, when the drill failed; the message lists every reason.
      - With V(false) the task succeeds and RV(result) says V(failed).
    type: bool
    default: true
seealso:
  - module: idp.recovery.offsite_fetch
  - module: idp.recovery.backup_set
'''

EXAMPLES = r'''
- name: Write the drill report and let the play decide
  idp.recovery.drill_report:
    dest_dir: /var/lib/idp-recovery/drills
    started: "{{ drill_started }}"
    rto_target: 4h
    rpo_target: 24h
    context:
      host: "{{ inventory_hostname }}"
      playbook: idp.recovery.drill
      offsite: s3 idp-backups/prod
    services:
      - name: authentik
        kind: authentik
        set: /var/tmp/drill/authentik/20261122T030000Z
        stamp: 20261122T030000Z
        source: offsite s3 idp-backups/prod
        target: scratch container idp-drill-pg
        steps:
          - {name: fetch, seconds: 42.1}
          - {name: verify, seconds: 3.4}
          - {name: restore, seconds: 118.0}
          - {name: checks, seconds: 6.2}
        checks:
          - {name: row counts, kind: row_counts, ok: true, detail: 212 tables equal}
          - {name: version, kind: version, ok: true, detail: 2025.10.1}
    metrics_file: /var/lib/prometheus/node-exporter/idp_recovery_drill.prom
    fail_on_failure: false
  register: drill

- name: Fail with every reason
  ansible.builtin.fail:
    msg: "{{ drill.reasons | join('; ') }}"
  when: drill.result == 'failed'
'''

RETURN = r'''
result:
  description: The verdict.
  returned: always
  type: str
  choices: [passed, failed]
reasons:
  description:
    - 'Why the drill failed, one sentence each, for example C(authentik: recovery took 5h 2m, target 4h).'
  returned: always
  type: list
  elements: str
warnings_found:
  description: Observations that do not fail the drill (a set dated after the drill started).
  returned: always
  type: list
  elements: str
report_json:
  description: Path of the JSON report (written, or that would be written in check mode).
  returned: always
  type: str
report_html:
  description: Path of the HTML report.
  returned: always
  type: str
latest_json:
  description: Path of C(latest.json).
  returned: always
  type: str
latest_html:
  description: Path of C(latest.html).
  returned: always
  type: str
metrics_file:
  description: Path of the metrics textfile.
  returned: when O(metrics_file) is given
  type: str
last_success_timestamp:
  description: The last passed drill in epoch seconds, this one or the one carried over from O(metrics_file).
  returned: always
  type: float
services:
  description: Per service, the measures and the outcome.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The service.
      type: str
    kind:
      description: Its kind.
      type: str
    result:
      description: V(passed) or V(failed).
      type: str
    rto_seconds:
      description: The recovery time, the sum of the step times.
      type: float
    rpo_seconds:
      description: The age of the set at the start of the drill; null when unknown.
      type: float
    rto_human:
      description: The recovery time, readable (C(1h 02m 03s)).
      type: str
    rpo_human:
      description: The age of the set, readable; null when unknown.
      type: str
    rto_ok:
      description: Whether the recovery time is within the target.
      type: bool
    rpo_ok:
      description: Whether the age of the set is known and within the target.
      type: bool
    checks_total:
      description: Number of checks.
      type: int
    checks_failed:
      description: Number of failed checks.
      type: int
    steps_failed:
      description: Number of failed steps.
      type: int
rto_target_seconds:
  description: The RTO target in seconds.
  returned: always
  type: float
rto_target_human:
  description: The RTO target, readable (C(4h)).
  returned: always
  type: str
rpo_target_human:
  description: The RPO target, readable (C(24h)).
  returned: always
  type: str
rpo_target_seconds:
  description: The RPO target in seconds.
  returned: always
  type: float
duration_seconds:
  description: From O(started) to O(finished).
  returned: always
  type: float
benchmark:
  description:
    - The benchmark the steps were compared with - C(source) (its file), C(generated), C(machine) (C(nproc), C(cpu),
      C(load)), C(steps) (the steps it holds), C(ignored) (entries left out, with the reason) and C(problem) (why there
      is none on record, or null).
  returned: always
  type: dict
throughput:
  description: Per service, the step that limits the recovery time and each step's throughput against the benchmark.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The service.
      type: str
    limiting_step:
      description: The step with the largest share of the recovery time - C(name), C(position), C(seconds), C(share)
        (0 to 1); null when no step took any time.
      type: dict
    steps:
      description:
        - Per step C(name), C(seconds), C(bytes), C(items), C(items_kind), C(mib_per_s), C(items_per_s), C(share),
          C(limiting), C(stock_step) (the step of the benchmark it is compared with), C(stock) (C(tool), C(rate),
          C(unit), C(size) of that step in the benchmark), C(ratio) (the step's rate over the stock tool's) and
          C(note) (why there is no ratio, for example C(no benchmark on record)).
      type: list
      elements: dict
    text:
      description: The same as readable lines, the limiting step first.
      type: list
      elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._drill.report import write_report
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module


def run(module):
    return write_report(module.params, module.check_mode, module.warn)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest_dir=dict(type='path', required=True),
            name=dict(type='str', aliases=['report_name']),
            started=dict(type='float', required=True),
            finished=dict(type='float'),
            rto_target=dict(type='raw', required=True),
            rpo_target=dict(type='raw', required=True),
            services=dict(type='list', elements='dict', required=True),
            context=dict(type='dict', default={}),
            require_checks=dict(type='bool', default=True),
            metrics_file=dict(type='path'),
            metrics_mode=dict(type='raw', default='0644'),
            benchmark_file=dict(type='path'),
            benchmark=dict(type='raw'),
            fail_on_failure=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == '__main__':
    main()
