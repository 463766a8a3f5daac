{#- The control node's shell runner runs the deploy and provision jobs as its
    own user, gitlab-runner; each reaches root through one sudo rule, to a
    wrapper that accepts only a commit id (and the job's artifact folder) and
    runs sitectl from the checkout (sitectl deploy / provision). #}
{%- from 'salt_master/map.jinja' import checkout, state_dir, sitectl %}
include:
  - gitlab_runner.package

gitlab-runner-deploy-wrappers-managed:
  file.managed:
    - names:
      - /usr/local/sbin/platform-deploy:
        - context:
            command: deploy
      - /usr/local/sbin/platform-provision:
        - context:
            command: provision
    - source: salt://gitlab_runner/files/platform-job.sh.j2
    - template: jinja
    - defaults:
        sitectl: {{ sitectl | json }}
        state_dir: {{ state_dir | json }}
        checkout: {{ checkout | json }}
    - user: root
    - group: root
    - mode: '0755'
    - check_cmd: /bin/sh -n

gitlab-runner-deploy-sudoers-managed:
  file.managed:
    - name: /etc/sudoers.d/platform-deploy
    - source: salt://gitlab_runner/files/sudoers.j2
    - template: jinja
    - mode: '0440'
    - check_cmd: /usr/sbin/visudo -cf
    - require:
      - pkg: gitlab-runner-package-installed
      - file: gitlab-runner-deploy-wrappers-managed
