{#- mailcow-dockerized at the pinned tag (mailcow:version). A moved pin checks
    the new tag out; mailcow.stack then pulls its images and recreates the
    stack. #}
{%- from 'mailcow/map.jinja' import mc %}
mailcow-checkout-packages-installed:
  pkg.installed:
    - pkgs: {{ mc.packages | json }}

mailcow-checkout-latest:
  git.latest:
    - name: {{ mc.repository }}
    - target: {{ mc.dir }}
    - rev: {{ mc.version }}
    - force_fetch: true
    - require:
      - pkg: mailcow-checkout-packages-installed
