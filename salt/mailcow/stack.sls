{#- The stack: started once mailcow.conf is in place, and moved with the pin by
    mailcow's own update steps. mailcow's update.sh merges the branch head,
    which would move past the pin, so the role runs what it does after its
    merge: pull the images of the checked-out compose file, then recreate what
    changed (`up -d --remove-orphans`). A changed mailcow.conf recreates the
    containers it concerns the same way. #}
{%- from 'mailcow/map.jinja' import mc %}
include:
  - docker
  - mailcow.checkout
  - mailcow.config

mailcow-stack-images-pulled:
  cmd.run:
    - name: docker compose --project-directory {{ mc.dir | quote }} pull --quiet
    - cwd: {{ mc.dir }}
    - onchanges:
      - git: mailcow-checkout-latest
    - require:
      - sls: docker
      - file: mailcow-config-file-managed

mailcow-stack-up:
  cmd.run:
    - name: docker compose --project-directory {{ mc.dir | quote }} up --detach --remove-orphans
    - cwd: {{ mc.dir }}
    - onchanges:
      - git: mailcow-checkout-latest
      - file: mailcow-config-file-managed
    - require:
      - cmd: mailcow-stack-images-pulled
