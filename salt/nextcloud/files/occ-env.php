<?php
// Managed by Salt (nextcloud.application): edit salt/nextcloud/files/occ-env.php.
//
// occ with its secret options taken from the environment: `php occ-env.php /path/to/occ ARGS`
// appends --database-pass / --admin-pass from NC_DATABASE_PASS / NC_ADMIN_PASS to occ's own
// argument vector inside this PHP process, removes them from the environment, and runs occ. The
// passwords are never in a command line (the process list shows ARGS only) nor in a log.
declare(strict_types=1);

if (PHP_SAPI !== 'cli' || $argc < 2) {
    fwrite(STDERR, "usage: php occ-env.php /path/to/occ ARGS\n");
    exit(2);
}
$occ = $argv[1];
$args = array_slice($argv, 2);
foreach (['NC_DATABASE_PASS' => '--database-pass', 'NC_ADMIN_PASS' => '--admin-pass'] as $variable => $option) {
    $value = getenv($variable);
    if ($value !== false && $value !== '') {
        $args[] = $option . '=' . $value;
    }
    putenv($variable);
    unset($_ENV[$variable], $_SERVER[$variable]);
}
$argv = array_merge([$occ], $args);
$argc = count($argv);
$_SERVER['argv'] = $argv;
$_SERVER['argc'] = $argc;
$_SERVER['SCRIPT_FILENAME'] = $occ;
$_SERVER['SCRIPT_NAME'] = $occ;
$_SERVER['PHP_SELF'] = $occ;
chdir(dirname($occ));
// occ itself is only `require_once __DIR__ . '/console.php'` after a shebang line, which a
// require would print: its console.php is run instead, as occ runs it.
require dirname($occ) . '/console.php';
