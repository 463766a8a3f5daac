{#- The mailcow role: mailcow-dockerized at the pinned tag on Docker, its
    mailcow.conf from the site with every secret from Vault, the stack started
    (and moved with the pin by mailcow's own update steps), the site's mail
    domains, mailboxes and aliases through its API, the DNS records of each
    domain published as code, and the mail certificate the proxy issues.
    With `mailcow:stack:converge: false` (the lab, where mailcow's images are
    unreachable) only what needs no image runs: Docker itself and the
    certificate. mailcow needs Docker 24 or later with compose v2: the docker
    state's docker-ce flavour (production), not Debian's docker.io. #}
{%- from 'mailcow/map.jinja' import mc %}
include:
  - docker
  - mailcow.certificate
{%- if mc.stack.converge %}
  - mailcow.python
  - mailcow.checkout
  - mailcow.config
  - mailcow.stack
  - mailcow.mail
  - mailcow.dns
{%- endif %}
