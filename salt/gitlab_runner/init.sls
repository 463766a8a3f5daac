{#- GitLab Runner, one state for both runner roles: the shell executor runner of
    the control node (deploy_runner: the deploy job) and the Docker executor
    runner of LXC 107 (gitlab_runner: Docker Engine from the docker state, the
    disk cleanup timer). Installed from GitLab's apt repository at a pinned
    version and registered with authentication tokens read from Vault;
    `gitlab_runner:install:converge: false` keeps only Docker (the lab). #}
{%- from 'gitlab_runner/map.jinja' import gitlab_runner, with_docker, with_shell %}
{%- if with_docker or gitlab_runner.install.converge %}
include:
{%- if with_docker %}
  - docker
  - gitlab_runner.cleanup
{%- endif %}
{%- if gitlab_runner.install.converge %}
  - gitlab_runner.package
  - gitlab_runner.config
  - gitlab_runner.service
{%-   if with_shell %}
  - gitlab_runner.deploy
{%-   endif %}
{%- endif %}
{%- else %}

gitlab-runner-not-installed:
  test.nop:
    - name: 'gitlab_runner:install:converge is false and this guest runs no Docker runner: nothing to do'
{%- endif %}
