{#- The gitlab-runner service. It reads config.toml again by itself when the
    file changes, so a new config needs no restart. #}
include:
  - gitlab_runner.config

gitlab-runner-service-running:
  unit.running:
    - name: gitlab-runner
    - enable: true
    - require:
      - gitlab_runner: gitlab-runner-config-present
