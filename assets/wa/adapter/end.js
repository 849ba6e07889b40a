// wafleet page adapter, last part: export the commands every part added and start the boot
// probe (see core.js).

  window.__wafleetAdapter = Object.freeze(Object.assign({}, COMMANDS));

  waitForModules();
})();
