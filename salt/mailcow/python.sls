{#- What the role's custom modules need in the minion's own Python (the venv
    Salt runs from): dnspython for mail_dns. #}
{%- from 'mailcow/map.jinja' import mc %}
mailcow-python-packages-installed:
  pip.installed:
    - pkgs: {{ mc.python_packages | json }}
    - bin_env: {{ grains['pythonexecutable'] }}
    - reload_modules: true
