{#- GitLab Runner from GitLab's apt repository: the key checked by fingerprint
    before it becomes the repository's keyring, the package (and its helper
    images) pinned to one version. #}
{%- from 'gitlab_runner/map.jinja' import gitlab_runner, key_check_script %}
{%- set repo = gitlab_runner.repository %}
include:
  - common.apt

gitlab-runner-package-key-tools-installed:
  pkg.installed:
    - pkgs: [gpg, ca-certificates]
    - install_recommends: false
    - require:
      - module: common-apt-lists-refreshed

gitlab-runner-package-key-check-script-managed:
  file.managed:
    - name: {{ key_check_script }}
    - source: salt://docker/files/check-repo-key.sh.j2
    - template: jinja
    - context:
        fingerprint: {{ repo.key_fingerprint | json }}
    - mode: '0755'
    - check_cmd: /bin/sh -n
    - require:
      - pkg: gitlab-runner-package-key-tools-installed

gitlab-runner-package-repo-key-managed:
  file.managed:
    - name: {{ repo.keyring }}
    - source: {{ repo.key_url }}
    - skip_verify: true
    - check_cmd: {{ key_check_script | quote }}
    - makedirs: true
    - mode: '0644'
    - require:
      - file: gitlab-runner-package-key-check-script-managed

gitlab-runner-package-repo-managed:
  pkgrepo.managed:
    - name: deb [signed-by={{ repo.keyring }}] {{ repo.uri }} {{ grains.get('oscodename', 'bookworm') }} main
    - file: /etc/apt/sources.list.d/gitlab-runner.list
    - aptkey: false
    - require:
      - file: gitlab-runner-package-repo-key-managed

gitlab-runner-package-installed:
  pkg.installed:
    - pkgs:
      - gitlab-runner-helper-images: {{ gitlab_runner.version }}
      - gitlab-runner: {{ gitlab_runner.version }}
    - hold: true
    - update_holds: true
    - refresh: true
    - require:
      - pkgrepo: gitlab-runner-package-repo-managed
