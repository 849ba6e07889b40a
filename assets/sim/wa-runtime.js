/*
 * wafleet simulator, chunk 1: the module registry, in WhatsApp Web's style.
 *
 * Bundles call __d(name, deps, factory) to define modules. A factory gets WhatsApp Web's seven
 * parameters (global, require, importDefault, importNamespace, requireLazy, module, exports) and
 * publishes its exports as properties of the last one, or replaces `module.exports` for
 * single-class modules (WAWebMsgKey). Modules are instantiated on first require. `require` of a
 * module that is not defined (yet) throws, as WhatsApp Web's does; `requireDeferred(name)` gives a
 * handle that resolves once a later bundle defines it (the media modules arrive with a lazily
 * loaded bundle once the socket is up). window.require is NOT published here: the app bundle
 * publishes it (with window.Debug) once the app has booted, the moment an adapter must wait for.
 *
 * The server stamps this bundle with the build's version, whether it is a July-2025 ("legacy")
 * build, and with the modules/members the `missing_modules` / `missing_members` faults remove
 * from this build (docs/simulator.md §3). The faults apply to every bundle, the lazy one too.
 *
 * `Bootloader.loadModules([component], cb)` fetches a lazily loaded bundle by adding its script:
 * the app does that for the media pipeline once the socket is CONNECTED (WhatsApp Web bootloads
 * its media/forward bundles on demand the same way).
 */
(function () {
  'use strict';
  var BUILD = { version: '__SIM_WEB_VERSION__', legacy: __SIM_LEGACY_BUILD__, missingModules: __SIM_MISSING_MODULES__, missingMembers: __SIM_MISSING_MEMBERS__ };
  var defs = Object.create(null);
  var cache = Object.create(null);
  var readyWaiters = Object.create(null);

  function isMissing(name) { return BUILD.missingModules.indexOf(name) >= 0; }

  function __d(name, deps, factory) {
    if (typeof name !== 'string' || typeof factory !== 'function') {
      throw new Error('__d: bad module definition');
    }
    // A build without this module: the definition is simply not in its bundles.
    if (isMissing(name)) return;
    defs[name] = { deps: deps || [], factory: factory };
    var waiting = readyWaiters[name];
    if (waiting) {
      delete readyWaiters[name];
      waiting.forEach(function (f) { try { f(); } catch (e) { console.error('deferred module listener failed', e); } });
    }
  }

  function importNamespace(name) { return requireModule(name); }
  function importDefault(name) {
    var m = requireModule(name);
    return m && m.default !== undefined ? m.default : m;
  }
  function requireLazy(names, cb) {
    Promise.all(names.map(function (n) { return requireDeferred(n).load(); })).then(function (mods) {
      cb.apply(null, mods);
    });
  }

  // Removes the members a `missing_members` fault names ("WAWebCmd.Cmd.refreshQR" removes
  // refreshQR from the Cmd export of WAWebCmd), own or inherited.
  function stripMembers(name, exports) {
    BUILD.missingMembers.forEach(function (path) {
      var parts = path.split('.');
      if (parts[0] !== name || parts.length < 2) return;
      var parent = exports;
      for (var i = 1; i < parts.length - 1 && parent != null; i++) parent = parent[parts[i]];
      if (parent == null || (typeof parent !== 'object' && typeof parent !== 'function')) return;
      var last = parts[parts.length - 1];
      try { delete parent[last]; } catch (e) { /* non-configurable: shadowed below */ }
      if (parent[last] !== undefined) {
        Object.defineProperty(parent, last, { value: undefined, configurable: true, writable: true });
      }
    });
  }

  function requireModule(name) {
    if (Object.prototype.hasOwnProperty.call(cache, name)) return cache[name];
    var d = defs[name];
    if (!d) throw new Error('Requiring unknown module "' + name + '"');
    var module = { exports: {} };
    // Published before the factory runs so cycles see a (partial) exports object.
    cache[name] = module.exports;
    var r = d.factory(window, requireModule, importDefault, importNamespace, requireLazy, module, module.exports);
    if (r !== undefined) module.exports = r;
    stripMembers(name, module.exports);
    cache[name] = module.exports;
    return module.exports;
  }

  // A handle on a module that may not be defined yet (WhatsApp Web's requireDeferred).
  function requireDeferred(name) {
    return {
      getModuleId: function () { return name; },
      isAvailable: function () { return !!defs[name]; },
      getModuleIfRequired: function () { return Object.prototype.hasOwnProperty.call(cache, name) ? cache[name] : null; },
      onReady: function (cb) {
        if (defs[name]) { cb(requireModule(name)); return; }
        (readyWaiters[name] = readyWaiters[name] || []).push(function () { cb(requireModule(name)); });
      },
      load: function () {
        var self = this;
        return new Promise(function (resolve, reject) {
          try { self.onReady(resolve); } catch (e) { reject(e); }
        });
      },
    };
  }

  __d('__debug', [], function (t, n, r, o, a, i, l) {
    Object.defineProperty(l, 'modulesMap', { enumerable: true, get: function () { return Object.assign({}, defs); } });
  });

  // The build's own facts, for the other bundles (not a WhatsApp module).
  __d('WAWebSimBuild', [], function () { return { version: BUILD.version, legacy: !!BUILD.legacy }; });

  // Lazy bundles by component name: the script that defines them.
  var BUNDLES = { WAWebMediaPipeline: '/static/wa-media.js' };
  var loading = Object.create(null);
  __d('Bootloader', [], function (t, n, r, o, a, i, l) {
    l.loadModules = function (components, cb) {
      var all = components.map(function (c) {
        var src = BUNDLES[c];
        if (!src) return Promise.reject(new Error('Bootloader: unknown component ' + c));
        if (!loading[c]) {
          loading[c] = new Promise(function (resolve, reject) {
            var el = document.createElement('script');
            el.src = src + '?v=' + encodeURIComponent(BUILD.version);
            el.onload = function () { resolve(); };
            el.onerror = function () { delete loading[c]; reject(new Error('Bootloader: cannot load ' + c)); };
            document.head.appendChild(el);
          });
        }
        return loading[c];
      });
      return Promise.all(all).then(function () { if (cb) cb(); });
    };
  });

  requireModule.__deferred = requireDeferred;
  window.__d = __d;
  // Private handles for the app bundle; adapters use window.require once it exists.
  Object.defineProperty(window, '__simRequire', { value: requireModule });
  Object.defineProperty(window, '__simRequireDeferred', { value: requireDeferred });
  Object.defineProperty(window, '__simBuild', { value: BUILD });
})();
