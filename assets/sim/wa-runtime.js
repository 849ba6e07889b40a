/*
 * wafleet simulator, chunk 1 of 3: the module registry.
 *
 * Mirrors the shape of WhatsApp Web's own loader: chunks call __d(name, deps, factory) to
 * define modules; modules are instantiated lazily on first require. window.require is NOT
 * published here: the last chunk publishes it (with window.Debug) once the app has booted,
 * which is the moment an adapter must wait for.
 */
(function () {
  'use strict';
  var defs = Object.create(null);
  var cache = Object.create(null);

  function __d(name, deps, factory) {
    if (typeof name !== 'string' || typeof factory !== 'function') {
      throw new Error('__d: bad module definition');
    }
    defs[name] = { deps: deps || [], factory: factory };
  }

  function requireModule(name) {
    if (Object.prototype.hasOwnProperty.call(cache, name)) return cache[name];
    var d = defs[name];
    if (!d) throw new Error('Requiring unknown module "' + name + '"');
    var module = { exports: {} };
    // Published before the factory runs so cycles see a (partial) exports object.
    cache[name] = module.exports;
    var r = d.factory(requireModule, module, module.exports);
    if (r !== undefined) module.exports = r;
    cache[name] = module.exports;
    return module.exports;
  }

  window.__d = __d;
  // Private handle for the app chunk; adapters use window.require once it exists.
  Object.defineProperty(window, '__simRequire', { value: requireModule });
})();
