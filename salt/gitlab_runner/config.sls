{#- config.toml from the site: the runners of this guest with their tokens
    read from Vault when the state runs (never in the compiled state), each new
    or rotated token verified with GitLab; a runner the site no longer gives
    this guest is unregistered. The metrics listener for the monitoring guest
    on the guest's address (port from the role catalog). #}
{%- from 'gitlab_runner/map.jinja' import gitlab_runner, guest, runners, concurrent, metrics_port %}
include:
  - gitlab_runner.package

gitlab-runner-config-present:
  gitlab_runner.config_present:
    - name: {{ gitlab_runner.config_file }}
    - url: {{ gitlab_runner.url }}
    - runners: {{ runners | json }}
    - concurrent: {{ [concurrent, 1] | max }}
    - check_interval: {{ gitlab_runner.check_interval }}
    - shutdown_timeout: {{ gitlab_runner.shutdown_timeout }}
    - listen_address: {{ (guest.get('ip', '127.0.0.1') ~ ':' ~ metrics_port) | json }}
    - mount: {{ gitlab_runner.vault_mount }}
{%- if gitlab_runner.ca_bundle %}
    - ca_bundle: {{ gitlab_runner.ca_bundle }}
{%- endif %}
    - require:
      - pkg: gitlab-runner-package-installed
