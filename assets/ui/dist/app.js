(()=>{var et,w,Et,me,O,St,Pt,At,ct,K,G,Rt,_t,dt,ut,$e,Z={},Y=[],ve=/acit|ex(?:s|g|n|p|$)|rph|grid|ows|mnc|ntw|ine[ch]|zoo|^ord|itera/i,nt=Array.isArray;function D(e,t){for(var n in t)e[n]=t[n];return e}function pt(e){e&&e.parentNode&&e.parentNode.removeChild(e)}function ht(e,t,n){var s,a,o,i={};for(o in t)o=="key"?s=t[o]:o=="ref"?a=t[o]:i[o]=t[o];if(arguments.length>2&&(i.children=arguments.length>3?et.call(arguments,2):n),typeof e=="function"&&e.defaultProps!=null)for(o in e.defaultProps)i[o]===void 0&&(i[o]=e.defaultProps[o]);return J(e,i,s,a,null)}function J(e,t,n,s,a){var o={type:e,props:t,key:n,ref:s,__k:null,__:null,__b:0,__e:null,__c:null,constructor:void 0,__v:a??++Et,__i:-1,__u:0};return a==null&&w.vnode!=null&&w.vnode(o),o}function st(e){return e.children}function X(e,t){this.props=e,this.context=t}function H(e,t){if(t==null)return e.__?H(e.__,e.__i+1):null;for(var n;t<e.__k.length;t++)if((n=e.__k[t])!=null&&n.__e!=null)return n.__e;return typeof e.type=="function"?H(e):null}function be(e){if(e.__P&&e.__d){var t=e.__v,n=t.__e,s=[],a=[],o=D({},t);o.__v=t.__v+1,w.vnode&&w.vnode(o),ft(e.__P,o,t,e.__n,e.__P.namespaceURI,32&t.__u?[n]:null,s,n??H(t),!!(32&t.__u),a),o.__v=t.__v,o.__.__k[o.__i]=o,It(s,o,a),t.__e=t.__=null,o.__e!=n&&Nt(o)}}function Nt(e){if((e=e.__)!=null&&e.__c!=null)return e.__e=e.__c.base=null,e.__k.some(function(t){if(t!=null&&t.__e!=null)return e.__e=e.__c.base=t.__e}),Nt(e)}function xt(e){(!e.__d&&(e.__d=!0)&&O.push(e)&&!tt.__r++||St!=w.debounceRendering)&&((St=w.debounceRendering)||Pt)(tt)}function tt(){try{for(var e,t=1;O.length;)O.length>t&&O.sort(At),e=O.shift(),t=O.length,be(e)}finally{O.length=tt.__r=0}}function Ut(e,t,n,s,a,o,i,d,u,l,c){var _,r,h,b,x,v,S=s&&s.__k||Y,y=t.length;for(u=ge(n,t,S,u,y),_=0;_<y;_++)(h=n.__k[_])!=null&&(r=h.__i!=-1&&S[h.__i]||Z,h.__i=_,v=ft(e,h,r,a,o,i,d,u,l,c),b=h.__e,h.ref&&r.ref!=h.ref&&(r.ref&&mt(r.ref,null,h),c.push(h.ref,h.__c||b,h)),x==null&&b!=null&&(x=b),4&h.__u?(u=Lt(h,u,e),r.__e&&(r.__e=null)):typeof h.type=="function"&&v!==void 0?u=v:b&&(u=b.nextSibling),h.__u&=-7);return n.__e=x,u}function ge(e,t,n,s,a){var o,i,d,u,l,c=n.length,_=c,r=0;for(e.__k=new Array(a),o=0;o<a;o++)(i=t[o])!=null&&typeof i!="boolean"&&typeof i!="function"?(typeof i=="string"||typeof i=="number"||typeof i=="bigint"||i.constructor==String?i=e.__k[o]=J(null,i,null,null,null):nt(i)?i=e.__k[o]=J(st,{children:i},null,null,null):i.constructor===void 0&&i.__b>0?i=e.__k[o]=J(i.type,i.props,i.key,i.ref?i.ref:null,i.__v):e.__k[o]=i,u=o+r,i.__=e,i.__b=e.__b+1,d=null,(l=i.__i=ye(i,n,u,_))!=-1&&(_--,(d=n[l])&&(d.__u|=2)),d==null||d.__v==null?(l==-1&&(a>c?r--:a<c&&r++),typeof i.type!="function"&&(i.__u|=4)):l!=u&&(l==u-1?r--:l==u+1?r++:(l>u?r--:r++,i.__u|=4))):e.__k[o]=null;if(_)for(o=0;o<c;o++)(d=n[o])!=null&&(2&d.__u)==0&&(d.__e==s&&(s=H(d)),Wt(d,d));return s}function Lt(e,t,n){var s,a;if(typeof e.type=="function"){for(s=e.__k,a=0;s&&a<s.length;a++)s[a]&&(s[a].__=e,t=Lt(s[a],t,n));return t}e.__e!=t&&(t&&e.type&&!t.parentNode&&(t=H(e)),t=n.insertBefore(e.__e,t||null));do t=t&&t.nextSibling;while(t!=null&&t.nodeType==8);return t}function ye(e,t,n,s){var a,o,i,d=e.key,u=e.type,l=t[n],c=l!=null&&(2&l.__u)==0;if(l===null&&d==null||c&&d==l.key&&u==l.type)return n;if(s>(c?1:0)){for(a=n-1,o=n+1;a>=0||o<t.length;)if((l=t[i=a>=0?a--:o++])!=null&&(2&l.__u)==0&&d==l.key&&u==l.type)return i}return-1}function Ct(e,t,n){t[0]=="-"?e.setProperty(t,n??""):e[t]=n==null?"":typeof n!="number"||ve.test(t)?n:n+"px"}function z(e,t,n,s,a){var o,i;t:if(t=="style")if(typeof n=="string")e.style.cssText=n;else{if(typeof s=="string"&&(e.style.cssText=s=""),s)for(t in s)n&&t in n||Ct(e.style,t,"");if(n)for(t in n)s&&n[t]==s[t]||Ct(e.style,t,n[t])}else if(t[0]=="o"&&t[1]=="n")o=t!=(t=t.replace(Rt,"$1")),i=t.toLowerCase(),t=i in e||t=="onFocusOut"||t=="onFocusIn"?i.slice(2):t.slice(2),e.l||(e.l={}),e.l[t+o]=n,n?s?n[G]=s[G]:(n[G]=_t,e.addEventListener(t,o?ut:dt,o)):e.removeEventListener(t,o?ut:dt,o);else{if(a=="http://www.w3.org/2000/svg")t=t.replace(/xlink(H|:h)/,"h").replace(/sName$/,"s");else if(t!="width"&&t!="height"&&t!="href"&&t!="list"&&t!="form"&&t!="tabIndex"&&t!="download"&&t!="rowSpan"&&t!="colSpan"&&t!="role"&&t!="popover"&&t in e)try{e[t]=n??"";break t}catch{}typeof n=="function"||(n==null||n===!1&&t[4]!="-"?e.removeAttribute(t):e.setAttribute(t,t=="popover"&&n==1?"":n))}}function Tt(e){return function(t){if(this.l){var n=this.l[t.type+e];if(t[K]==null)t[K]=_t++;else if(t[K]<n[G])return;return n(w.event?w.event(t):t)}}}function ft(e,t,n,s,a,o,i,d,u,l){var c,_,r,h,b,x,v,S,y,A,L,U,N,I,m,f,k=t.type;if(t.constructor!==void 0)return null;128&n.__u&&(u=!!(32&n.__u),o=[d=t.__e=n.__e]),(c=w.__b)&&c(t);t:if(typeof k=="function"){_=i.length;try{if(y=t.props,A=k.prototype&&k.prototype.render,L=(c=k.contextType)&&s[c.__c],U=c?L?L.props.value:c.__:s,n.__c?S=(r=t.__c=n.__c).__=r.__E:(A?t.__c=r=new k(y,U):(t.__c=r=new X(y,U),r.constructor=k,r.render=we),L&&L.sub(r),r.state||(r.state={}),r.__n=s,h=r.__d=!0,r.__h=[],r._sb=[]),A&&r.__s==null&&(r.__s=r.state),A&&k.getDerivedStateFromProps!=null&&(r.__s==r.state&&(r.__s=D({},r.__s)),D(r.__s,k.getDerivedStateFromProps(y,r.__s))),b=r.props,x=r.state,r.__v=t,h)A&&k.getDerivedStateFromProps==null&&r.componentWillMount!=null&&r.componentWillMount(),A&&r.componentDidMount!=null&&r.__h.push(r.componentDidMount);else{if(A&&k.getDerivedStateFromProps==null&&y!==b&&r.componentWillReceiveProps!=null&&r.componentWillReceiveProps(y,U),t.__v==n.__v||!r.__e&&r.shouldComponentUpdate!=null&&r.shouldComponentUpdate(y,r.__s,U)===!1){t.__v!=n.__v&&(r.props=y,r.state=r.__s,r.__d=!1),t.__e=n.__e,t.__k=n.__k,t.__k.some(function(R){R&&(R.__=t)}),Y.push.apply(r.__h,r._sb),r._sb=[],r.__h.length&&i.push(r),d=H(n);break t}r.componentWillUpdate!=null&&r.componentWillUpdate(y,r.__s,U),A&&r.componentDidUpdate!=null&&r.__h.push(function(){r.componentDidUpdate(b,x,v)})}if(r.context=U,r.props=y,r.__P=e,r.__e=!1,N=w.__r,I=0,A)r.state=r.__s,r.__d=!1,N&&N(t),c=r.render(r.props,r.state,r.context),Y.push.apply(r.__h,r._sb),r._sb=[];else do r.__d=!1,N&&N(t),c=r.render(r.props,r.state,r.context),r.state=r.__s;while(r.__d&&++I<25);r.state=r.__s,r.getChildContext!=null&&(s=D(D({},s),r.getChildContext())),A&&!h&&r.getSnapshotBeforeUpdate!=null&&(v=r.getSnapshotBeforeUpdate(b,x)),m=c!=null&&c.type===st&&c.key==null?Ot(c.props.children):c,d=Ut(e,nt(m)?m:[m],t,n,s,a,o,i,d,u,l),r.base=t.__e,t.__u&=-161,r.__h.length&&i.push(r),S&&(r.__E=r.__=null)}catch(R){if(i.length=_,t.__v=null,u||o!=null){if(R.then){for(t.__u|=u?160:128;d&&d.nodeType==8&&d.nextSibling;)d=d.nextSibling;o!=null&&(o[o.indexOf(d)]=null),t.__e=d}else if(o!=null)for(f=o.length;f--;)pt(o[f])}else t.__e=n.__e;t.__k==null&&(t.__k=n.__k||[]),R.then||Dt(t),w.__e(R,t,n)}}else o==null&&t.__v==n.__v?(t.__k=n.__k,t.__e=n.__e):d=t.__e=ke(n.__e,t,n,s,a,o,i,u,l);return(c=w.diffed)&&c(t),128&t.__u?void 0:d}function Dt(e){e&&(e.__c&&(e.__c.__e=!0),e.__k&&e.__k.some(Dt))}function It(e,t,n){for(var s=0;s<n.length;s++)mt(n[s],n[++s],n[++s]);w.__c&&w.__c(t,e),e.some(function(a){try{e=a.__h,a.__h=[],e.some(function(o){o.call(a)})}catch(o){w.__e(o,a.__v)}})}function Ot(e){return typeof e!="object"||e==null||e.__b>0?e:nt(e)?e.map(Ot):e.constructor!==void 0?null:D({},e)}function ke(e,t,n,s,a,o,i,d,u){var l,c,_,r,h,b,x,v=n.props||Z,S=t.props,y=t.type;if(y=="svg"?a="http://www.w3.org/2000/svg":y=="math"?a="http://www.w3.org/1998/Math/MathML":a||(a="http://www.w3.org/1999/xhtml"),o!=null){for(l=0;l<o.length;l++)if((h=o[l])&&"setAttribute"in h==!!y&&(y?h.localName==y:h.nodeType==3)){e=h,o[l]=null;break}}if(e==null){if(y==null)return document.createTextNode(S);e=document.createElementNS(a,y,S.is&&S),d&&(w.__m&&w.__m(t,o),d=!1),o=null}if(y==null)v===S||d&&e.data==S||(e.data=S);else{if(o=y=="textarea"&&S.defaultValue!=null?null:o&&et.call(e.childNodes),!d&&o!=null)for(v={},l=0;l<e.attributes.length;l++)v[(h=e.attributes[l]).name]=h.value;for(l in v)h=v[l],l=="dangerouslySetInnerHTML"?_=h:l=="children"||l in S||l=="value"&&"defaultValue"in S||l=="checked"&&"defaultChecked"in S||z(e,l,null,h,a);for(l in S)h=S[l],l=="children"?r=h:l=="dangerouslySetInnerHTML"?c=h:l=="value"?b=h:l=="checked"?x=h:d&&typeof h!="function"||v[l]===h||z(e,l,h,v[l],a);if(c)d||_&&(c.__html==_.__html||c.__html==e.innerHTML)||(e.innerHTML=c.__html),t.__k=[];else if(_&&(e.innerHTML=""),Ut(t.type=="template"?e.content:e,nt(r)?r:[r],t,n,s,y=="foreignObject"?"http://www.w3.org/1999/xhtml":a,o,i,o?o[0]:n.__k&&H(n,0),d,u),o!=null)for(l=o.length;l--;)pt(o[l]);d&&y!="textarea"||(l="value",y=="progress"&&b==null?e.removeAttribute("value"):b!=null&&(b!==e[l]||y=="progress"&&!b||y=="option"&&b!=v[l])&&z(e,l,b,v[l],a),l="checked",x!=null&&x!=e[l]&&z(e,l,x,v[l],a))}return e}function mt(e,t,n){try{if(typeof e=="function"){var s=typeof e.__u=="function";s&&e.__u(),s&&t==null||(e.__u=e(t))}else e.current=t}catch(a){w.__e(a,n)}}function Wt(e,t,n){var s,a;if(w.unmount&&w.unmount(e),(s=e.ref)&&(s.current&&s.current!=e.__e||mt(s,null,t)),(s=e.__c)!=null){if(s.componentWillUnmount)try{s.componentWillUnmount()}catch(o){w.__e(o,t)}s.base=s.__P=s.__n=null}if(s=e.__k)for(a=0;a<s.length;a++)s[a]&&Wt(s[a],t,n||typeof e.type!="function");n||pt(e.__e),e.__c=e.__=e.__e=void 0}function we(e,t,n){return this.constructor(e,n)}function Mt(e,t,n){var s,a,o,i;t==document&&(t=document.documentElement),w.__&&w.__(e,t),a=(s=typeof n=="function")?null:n&&n.__k||t.__k,o=[],i=[],ft(t,e=(!s&&n||t).__k=ht(st,null,[e]),a||Z,Z,t.namespaceURI,!s&&n?[n]:a?null:t.firstChild?et.call(t.childNodes):null,o,!s&&n?n:a?a.__e:t.firstChild,s,i),It(o,e,i),e.props.children=null}et=Y.slice,w={__e:function(e,t,n,s){for(var a,o,i;t=t.__;)if((a=t.__c)&&!a.__)try{if((o=a.constructor)&&o.getDerivedStateFromError!=null&&(a.setState(o.getDerivedStateFromError(e)),i=a.__d),a.componentDidCatch!=null&&(a.componentDidCatch(e,s||{}),i=a.__d),i)return a.__E=a}catch(d){e=d}throw e}},Et=0,me=function(e){return e!=null&&e.constructor===void 0},X.prototype.setState=function(e,t){var n;n=this.__s!=null&&this.__s!=this.state?this.__s:this.__s=D({},this.state),typeof e=="function"&&(e=e(D({},n),this.props)),e&&D(n,e),e!=null&&this.__v&&(t&&this._sb.push(t),xt(this))},X.prototype.forceUpdate=function(e){this.__v&&(this.__e=!0,e&&this.__h.push(e),xt(this))},X.prototype.render=st,O=[],Pt=typeof Promise=="function"?Promise.prototype.then.bind(Promise.resolve()):setTimeout,At=function(e,t){return e.__v.__b-t.__v.__b},tt.__r=0,ct=Math.random().toString(8),K="__d"+ct,G="__a"+ct,Rt=/(PointerCapture)$|Capture$/i,_t=0,dt=Tt(!1),ut=Tt(!0),$e=0;var Q,C,$t,Ht,rt=0,zt=[],E=w,jt=E.__b,qt=E.__r,Ft=E.diffed,Bt=E.__c,Gt=E.unmount,Qt=E.__;function bt(e,t){E.__h&&E.__h(C,e,rt||t),rt=0;var n=C.__H||(C.__H={__:[],__h:[]});return e>=n.__.length&&n.__.push({}),n.__[e]}function $(e){return rt=1,Se(Jt,e)}function Se(e,t,n){var s=bt(Q++,2);if(s.t=e,!s.__c&&(s.__=[n?n(t):Jt(void 0,t),function(d){var u=s.__N?s.__N[0]:s.__[0],l=s.t(u,d);u!==l&&(s.__N=[l,s.__[1]],s.__c.setState({}))}],s.__c=C,!C.__f)){var a=function(d,u,l){if(!s.__c.__H)return!0;var c=!1,_=s.__c.props!==d;if(s.__c.__H.__.some(function(h){if(h.__N){c=!0;var b=h.__[0];h.__=h.__N,h.__N=void 0,b!==h.__[0]&&(_=!0)}}),o){var r=o.call(this,d,u,l);return c?r||_:r}return!c||_};C.__f=!0;var o=C.shouldComponentUpdate,i=C.componentWillUpdate;C.componentWillUpdate=function(d,u,l){if(this.__e){var c=o;o=void 0,a(d,u,l),o=c}i&&i.call(this,d,u,l)},C.shouldComponentUpdate=a}return s.__N||s.__}function P(e,t){var n=bt(Q++,3);!E.__s&&Kt(n.__H,t)&&(n.__=e,n.u=t,C.__H.__h.push(n))}function j(e){return rt=5,xe(function(){return{current:e}},[])}function xe(e,t){var n=bt(Q++,7);return Kt(n.__H,t)&&(n.__=e(),n.__H=t,n.__h=e),n.__}function Ce(){for(var e;e=zt.shift();){var t=e.__H;if(e.__P&&t)try{t.__h.some(ot),t.__h.some(vt),t.__h=[]}catch(n){t.__h=[],E.__e(n,e.__v)}}}E.__b=function(e){C=null,jt&&jt(e)},E.__=function(e,t){e&&t.__k&&t.__k.__m&&(e.__m=t.__k.__m),Qt&&Qt(e,t)},E.__r=function(e){qt&&qt(e),Q=0;var t=(C=e.__c).__H;t&&($t===C?(t.__h=[],C.__h=[],t.__.some(function(n){n.__N&&(n.__=n.__N),n.u=n.__N=void 0})):(t.__h.some(ot),t.__h.some(vt),t.__h=[],Q=0)),$t=C},E.diffed=function(e){Ft&&Ft(e);var t=e.__c;t&&t.__H&&(t.__H.__h.length&&(zt.push(t)!==1&&Ht===E.requestAnimationFrame||((Ht=E.requestAnimationFrame)||Te)(Ce)),t.__H.__.some(function(n){n.u&&(n.__H=n.u,n.u=void 0)})),$t=C=null},E.__c=function(e,t){t.some(function(n){try{n.__h.some(ot),n.__h=n.__h.filter(function(s){return!s.__||vt(s)})}catch(s){t.some(function(a){a.__h&&(a.__h=[])}),t=[],E.__e(s,n.__v)}}),Bt&&Bt(e,t)},E.unmount=function(e){Gt&&Gt(e);var t,n=e.__c;n&&n.__H&&(n.__H.__.some(function(s){try{ot(s)}catch(a){t=a}}),n.__H=void 0,t&&E.__e(t,n.__v))};var Vt=typeof requestAnimationFrame=="function";function Te(e){var t,n=function(){clearTimeout(s),Vt&&cancelAnimationFrame(t),setTimeout(e)},s=setTimeout(n,35);Vt&&(t=requestAnimationFrame(n))}function ot(e){var t=C,n=e.__c;typeof n=="function"&&(e.__c=void 0,n()),C=t}function vt(e){var t=C;e.__c=e.__(),C=t}function Kt(e,t){return!e||e.length!==t.length||t.some(function(n,s){return n!==e[s]})}function Jt(e,t){return typeof t=="function"?t(e):t}var at=class{constructor(t){this.onEvent=t,this.buffer="",this.reset(),this.lastId=null}reset(){this.data=[],this.event="",this.id=null}push(t){for(this.buffer+=t;;){let n=/\r\n|\r|\n/.exec(this.buffer);if(!n||n[0]==="\r"&&n.index===this.buffer.length-1)return;let s=this.buffer.slice(0,n.index);this.buffer=this.buffer.slice(n.index+n[0].length),this.line(s)}}line(t){if(t===""){this.data.length>0&&(this.id!==null&&(this.lastId=this.id),this.onEvent({id:this.lastId,event:this.event||"message",data:this.data.join(`
`)})),this.reset();return}if(t.startsWith(":"))return;let n=t.indexOf(":"),s=n<0?t:t.slice(0,n),a=n<0?"":t.slice(n+1);a.startsWith(" ")&&(a=a.slice(1)),s==="data"?this.data.push(a):s==="event"?this.event=a:s==="id"&&!a.includes("\0")&&(this.id=a)}};var gt="wafleet.auth";function Xt(){try{let e=JSON.parse(sessionStorage.getItem(gt)??"null");return e&&typeof e.token=="string"?e:null}catch{return null}}function yt(e){e?sessionStorage.setItem(gt,JSON.stringify(e)):sessionStorage.removeItem(gt)}var V=class extends Error{constructor(t,n,s){super(s||n||`HTTP ${t}`),this.status=t,this.code=n}},kt=()=>{};function Zt(e){kt=e}function Yt(e,t={}){return{Authorization:`Bearer ${e}`,...t}}async function te(e,t,n,{body:s,accept:a,signal:o}={}){let i=Yt(e,a?{Accept:a}:{});s!==void 0&&(i["Content-Type"]="application/json");let d=await fetch(n,{method:t,headers:i,body:s===void 0?void 0:JSON.stringify(s),cache:"no-store",credentials:"omit",signal:o});if(!d.ok){let u=await d.json().catch(()=>({}));throw d.status===401&&kt(),new V(d.status,u.error,u.message)}return d}async function T(e,t,n,s){let a=await te(e,t,n,s);return a.status===204?null:a.json()}async function ee(e){let t=e.trim(),n=/^wft1\.([A-Za-z0-9_-]{1,64})\./.exec(t);return n?(await T(t,"GET",`/v1/workspaces/${n[1]}/sessions`),{token:t,scope:"workspace",workspace:n[1]}):(await T(t,"GET","/v1/shards"),{token:t,scope:"admin"})}async function ne(e,t,n,s){let a=await te(e,"GET",`/v1/workspaces/${t}/sessions/${n}/qr`,{accept:"image/png",signal:s});return URL.createObjectURL(await a.blob())}var Ee=(e,t)=>new Promise(n=>{let s=setTimeout(n,e);t?.addEventListener("abort",()=>{clearTimeout(s),n()},{once:!0})});async function se(e,t,n,{onEvent:s,onState:a,signal:o}){let i=null,d=1e3;for(;!o.aborted;){a?.("connecting");try{let u=Yt(e,{Accept:"text/event-stream"});i&&(u["Last-Event-ID"]=i);let l=await fetch(`/v1/workspaces/${t}/sessions/${n}/events`,{headers:u,cache:"no-store",credentials:"omit",signal:o});if(!l.ok)throw new V(l.status,"stream",`event stream answered ${l.status}`);a?.("open"),d=1e3;let c=new at(r=>{i=r.id??i;let h=null;try{h=JSON.parse(r.data)}catch{}s({id:r.id,event:r.event,envelope:h,raw:r.data})}),_=l.body.pipeThrough(new TextDecoderStream).getReader();for(;;){let{value:r,done:h}=await _.read();if(h)break;c.push(r)}}catch(u){if(o.aborted)return;if(u instanceof V&&u.status===401){kt();return}}a?.("retrying"),await Ee(d,o),d=Math.min(d*2,15e3)}}var re=function(e,t,n,s){var a;t[0]=0;for(var o=1;o<t.length;o++){var i=t[o++],d=t[o]?(t[0]|=i?1:2,n[t[o++]]):t[++o];i===3?s[0]=d:i===4?s[1]=Object.assign(s[1]||{},d):i===5?(s[1]=s[1]||{})[t[++o]]=d:i===6?s[1][t[++o]]+=d+"":i?(a=e.apply(d,re(e,d,n,["",null])),s.push(a),d[0]?t[0]|=2:(t[o-2]=0,t[o]=a)):s.push(d)}return s},oe=new Map;function ae(e){var t=oe.get(this);return t||(t=new Map,oe.set(this,t)),(t=re(this,t.get(e)||(t.set(e,t=(function(n){for(var s,a,o=1,i="",d="",u=[0],l=function(r){o===1&&(r||(i=i.replace(/^\s*\n\s*|\s*\n\s*$/g,"")))?u.push(0,r,i):o===3&&(r||i)?(u.push(3,r,i),o=2):o===2&&i==="..."&&r?u.push(4,r,0):o===2&&i&&!r?u.push(5,0,!0,i):o>=5&&((i||!r&&o===5)&&(u.push(o,0,i,a),o=6),r&&(u.push(o,r,0,a),o=6)),i=""},c=0;c<n.length;c++){c&&(o===1&&l(),l(c));for(var _=0;_<n[c].length;_++)s=n[c][_],o===1?s==="<"?(l(),u=[u],o=3):i+=s:o===4?i==="--"&&s===">"?(o=1,i=""):i=s+i[0]:d?s===d?d="":i+=s:s==='"'||s==="'"?d=s:s===">"?(l(),o=1):o&&(s==="="?(o=5,a=i,i=""):s==="/"&&(o<5||n[c][_+1]===">")?(l(),o===3&&(u=u[0]),o=u,(u=u[0]).push(2,0,o),o=0):s===" "||s==="	"||s===`
`||s==="\r"?(l(),o=2):i+=s),o===3&&i==="!--"&&(o=4,u=u[0])}return l(),u})(e)),t),arguments,[])).length>1?t:t[0]}var p=ae.bind(ht),F=["STOPPED","STARTING","SCAN_QR_CODE","WORKING","FAILED"];function q({status:e}){let t=e??"UNKNOWN";return p`<span class=${`badge badge-${t.toLowerCase()}`} data-status=${t}>${t}</span>`}function g({kind:e="info",children:t}){return p`<div class=${`banner banner-${e}`} role=${e==="error"?"alert":"status"}>${t}</div>`}function B({open:e,title:t,children:n,confirmLabel:s="Confirm",danger:a,onConfirm:o,onCancel:i}){let d=j(null),u=j(null);return P(()=>{let l=d.current;l&&(e&&!l.open?(l.showModal(),u.current?.focus()):!e&&l.open&&l.close())},[e]),p`
    <dialog ref=${d} class="dialog" aria-labelledby="dialog-title"
      onCancel=${l=>{l.preventDefault(),i()}}>
      <form onSubmit=${l=>{l.preventDefault(),o()}}>
        <h2 id="dialog-title">${t}</h2>
        <div class="dialog-body">${n}</div>
        <div class="dialog-actions">
          <button type="button" onClick=${i}>Cancel</button>
          <button type="submit" ref=${u} class=${a?"danger":"primary"}>${s}</button>
        </div>
      </form>
    </dialog>`}function W(e,t,n=[]){let[s,a]=$(null),[o,i]=$(null),[d,u]=$(0);return P(()=>{let l=!1,c=null,_=new AbortController,r=async()=>{try{let b=await e(_.signal);l||(a(b),i(null))}catch(b){!l&&b.name!=="AbortError"&&i(b)}!l&&t&&(c=setTimeout(h,t))},h=()=>{document.hidden?document.addEventListener("visibilitychange",r,{once:!0}):r()};return r(),()=>{l=!0,clearTimeout(c),document.removeEventListener("visibilitychange",r),_.abort()}},[...n,d]),[s,o,()=>u(l=>l+1)]}function it(e){if(e==null)return"–";let t=e/(1024*1024);return t>=1024?`${(t/1024).toFixed(1)} GiB`:`${t.toFixed(0)} MiB`}function wt(e){if(!e)return"–";let t=Math.max(0,Math.round((Date.now()-e)/1e3));return t<60?`${t} s ago`:t<3600?`${Math.round(t/60)} min ago`:`${Math.round(t/3600)} h ago`}var ie=(e,t)=>`#/sessions/${encodeURIComponent(e)}/${encodeURIComponent(t)}`;function le({onLogin:e}){let[t,n]=$(""),[s,a]=$(null),[o,i]=$(!1);return p`
    <main id="main" class="login" tabindex="-1">
      <h1>wafleet dashboard</h1>
      <p>Sign in with the fleet's admin token, or with a workspace token
        (<code>wafleet token &lt;workspace&gt;</code>) to see one workspace.
        The token stays in this browser tab only.</p>
      <form onSubmit=${async u=>{u.preventDefault(),i(!0),a(null);try{e(await ee(t))}catch(l){a(l.status===401||l.status===403?"This token was not accepted.":`Cannot sign in: ${l.message}`)}finally{i(!1)}}} class="card">
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autocomplete="off" required
          value=${t} onInput=${u=>n(u.target.value)} />
        <button type="submit" class="primary" disabled=${o||!t.trim()}>Sign in</button>
        ${s&&p`<${g} kind="error">${s}</${g}>`}
      </form>
    </main>`}function ce({auth:e}){let[t,n]=W(async c=>{let[_,r]=await Promise.all([T(e.token,"GET","/v1/shards",{signal:c}),T(e.token,"GET","/v1/sessions",{signal:c})]);return{shards:_,sessions:r}},5e3,[e.token]);if(n&&!t)return p`<${g} kind="error">Cannot load the fleet: ${n.message}</${g}>`;if(!t)return p`<p aria-busy="true">Loading…</p>`;let{shards:s,sessions:a}=t,o=new Map,i=Object.fromEntries(F.map(c=>[c,0]));for(let c of a.sessions){let _=o.get(c.shard)??{};_[c.status]=(_[c.status]??0)+1,o.set(c.shard,_),i[c.status]=(i[c.status]??0)+1}let d=new Map(a.shards.filter(c=>!c.ok).map(c=>[c.id,c])),u=s.shards.filter(c=>c.healthy).length,l=Object.entries(s.map.pins??{});return p`
    <h1>Fleet</h1>
    ${n&&p`<${g} kind="warn">Refresh failed: ${n.message} (showing the last answer)</${g}>`}
    <section class="cards" aria-label="Summary">
      <div class="card stat"><span class="stat-n" data-testid="map-version">${s.version}</span><span>map version</span></div>
      <div class="card stat"><span class="stat-n">${u} / ${s.shards.length}</span><span>shards healthy</span></div>
      <div class="card stat"><span class="stat-n">${a.sessions.length}</span><span>sessions</span></div>
      ${F.map(c=>p`
        <a class="card stat" href=${`#/sessions?status=${c}`}><span class="stat-n">${i[c]}</span><${q} status=${c} /></a>`)}
    </section>
    <h2>Shards</h2>
    <div class="table-wrap">
    <table>
      <caption class="sr-only">Shards of the map with their health and sessions</caption>
      <thead><tr><th scope="col">Shard</th><th scope="col">Health</th><th scope="col">Weight</th><th scope="col">Draining</th>
        <th scope="col">Instances</th><th scope="col">Sessions by status</th></tr></thead>
      <tbody>
      ${s.shards.map(c=>{let _=o.get(c.id)??{},r=d.get(c.id);return p`<tr data-shard=${c.id}>
          <th scope="row">${c.id}</th>
          <td><span class=${c.healthy?"ok":"bad"}>${c.healthy?"healthy":"down"}</span>
            ${c.error&&p`<div class="muted small">${c.error}</div>`}</td>
          <td>${c.weight}</td>
          <td>${c.draining?"yes":"no"}</td>
          <td>${c.instances.length?c.instances.join(", "):"–"}</td>
          <td>${r?p`<span class="bad">not answering (${r.error})</span>`:F.filter(h=>_[h]).map(h=>p`<span class="count"><${q} status=${h} /> ${_[h]}</span>`)}
            ${!r&&!Object.keys(_).length&&p`<span class="muted">none</span>`}</td>
        </tr>`})}
      </tbody>
    </table>
    </div>
    <h2>Pins</h2>
    ${l.length?p`<ul class="pins">${l.map(([c,_])=>p`<li><code>${c}</code> → shard ${_}</li>`)}</ul>`:p`<p class="muted">No workspace is pinned.</p>`}`}function de({auth:e,query:t}){let[n,s]=$(t.get("status")??""),[a,o]=$(t.get("q")??""),[i,d,u]=W(async r=>{if(e.scope==="admin")return T(e.token,"GET","/v1/sessions",{signal:r});let h=await T(e.token,"GET",`/v1/workspaces/${e.workspace}/sessions`,{signal:r});return{sessions:h.sessions,shards:[{id:h.shard,ok:!0}],partial:!1}},5e3,[e.token]),l=a.trim().toLowerCase(),c=(i?.sessions??[]).filter(r=>(!n||r.status===n)&&(!l||[r.workspace,r.session,r.me??""].some(h=>h.toLowerCase().includes(l)))),_=(i?.shards??[]).filter(r=>!r.ok);return p`
    <h1>Sessions${e.scope==="workspace"?p` of <code>${e.workspace}</code>`:""}</h1>
    <form class="filters" role="search" onSubmit=${r=>r.preventDefault()}>
      <div>
        <label for="status-filter">Status</label>
        <select id="status-filter" value=${n} onChange=${r=>s(r.target.value)}>
          <option value="">all</option>
          ${F.map(r=>p`<option value=${r}>${r}</option>`)}
        </select>
      </div>
      <div class="grow">
        <label for="search">Search workspace, session or phone</label>
        <input id="search" type="search" value=${a} onInput=${r=>o(r.target.value)} />
      </div>
      <button type="button" onClick=${u}>Refresh</button>
    </form>
    ${d&&p`<${g} kind="error">Cannot load sessions: ${d.message}</${g}>`}
    ${_.length>0&&p`<${g} kind="warn" >Partial list: shard${_.length>1?"s":""}
      ${_.map(r=>r.id).join(", ")} did not answer (${_.map(r=>r.error).join(", ")}).</${g}>`}
    ${!i&&!d&&p`<p aria-busy="true">Loading…</p>`}
    ${i&&p`
      <p class="muted" aria-live="polite">${c.length} of ${i.sessions.length} sessions</p>
      <div class="table-wrap">
      <table class="sessions">
        <caption class="sr-only">Sessions</caption>
        <thead><tr>
          <th scope="col">Workspace</th><th scope="col">Session</th><th scope="col">Status</th>
          <th scope="col">Me</th><th scope="col">Memory</th><th scope="col">Restarts</th>
          <th scope="col">Last error</th><th scope="col">WhatsApp Web</th><th scope="col">Shard</th>
        </tr></thead>
        <tbody>
        ${c.map(r=>p`<tr data-ws=${r.workspace} data-session=${r.session}>
          <td data-label="Workspace">${r.workspace}</td>
          <th scope="row" data-label="Session"><a href=${ie(r.workspace,r.session)}>${r.session}</a></th>
          <td data-label="Status"><${q} status=${r.status} /></td>
          <td data-label="Me">${r.me??"–"}</td>
          <td data-label="Memory">${it(r.memory_bytes)}</td>
          <td data-label="Restarts">${r.restarts??0}</td>
          <td data-label="Last error" class="error-cell">${r.last_error??"–"}</td>
          <td data-label="WhatsApp Web">${r.wa_version??"–"}</td>
          <td data-label="Shard">${r.shard}</td>
        </tr>`)}
        </tbody>
      </table>
      </div>
      ${c.length===0&&p`<p class="muted">No session matches.</p>`}`}`}var Pe=200,Ae=[{name:"start",label:"Start"},{name:"restart",label:"Restart"},{name:"stop",label:"Stop",confirm:"Stop this session? Its browser closes; messages wait until it is started again."},{name:"logout",label:"Log out",confirm:"Log this session out? The device is unlinked from the phone and a new QR scan is needed."}];function ue({auth:e,ws:t,s:n}){let s=`/v1/workspaces/${encodeURIComponent(t)}/sessions/${encodeURIComponent(n)}`,[a,o]=$(null),[i,d]=$(null),[u,l]=$([]),[c,_]=$("connecting"),[r,h]=$(0),[b,x]=$(null),[v,S]=$(null),[y,A]=$(!1),[L,U]=$(0),N=()=>U(f=>f+1);P(()=>{let f=new AbortController;return T(e.token,"GET",s,{signal:f.signal}).then(k=>{o(k),d(null)}).catch(k=>{k.name!=="AbortError"&&d(k)}),()=>f.abort()},[s,L]),P(()=>{if(c==="open")return;let f=setInterval(N,5e3);return()=>clearInterval(f)},[c]),P(()=>{let f=new AbortController;return se(e.token,t,n,{signal:f.signal,onState:_,onEvent:k=>{l(R=>[k,...R].slice(0,Pe)),k.event==="session.qr"&&h(R=>R+1),k.event==="session.status"&&N()}}),()=>f.abort()},[e.token,t,n]);let I=async f=>{A(!0),x(null);try{let k=await T(e.token,"POST",`${s}/${f}`);o(k),x({kind:"info",text:`${f}: done (status ${k.status}).`})}catch(k){x({kind:"error",text:`${f} failed: ${k.message}`})}finally{A(!1)}},m=f=>f.confirm?S(f):I(f.name);return i&&!a?p`<${g} kind="error">Cannot load ${t}/${n}: ${i.message}</${g}>`:a?p`
    <nav aria-label="Breadcrumb" class="crumbs"><a href="#/sessions">Sessions</a> › <span>${t}</span> › <span aria-current="page">${n}</span></nav>
    <h1>${t} / ${n}</h1>
    ${b&&p`<${g} kind=${b.kind}>${b.text}</${g}>`}
    <div class="grid">
      <section class="card" aria-labelledby="state-h">
        <h2 id="state-h">State</h2>
        <dl class="facts">
          <dt>Status</dt><dd data-testid="session-status"><${q} status=${a.status} /></dd>
          <dt>Me</dt><dd>${a.me??"–"}</dd>
          <dt>Shard</dt><dd>${a.shard}</dd>
          <dt>Restarts</dt><dd data-testid="session-restarts">${a.restarts??0}</dd>
          <dt>Memory</dt><dd>${it(a.memory_bytes)}</dd>
          <dt>WhatsApp Web</dt><dd>${a.wa_version??"–"}</dd>
          <dt>Last error</dt><dd class="error-cell">${a.last_error??"–"}</dd>
          <dt>Changed</dt><dd>${wt(a.updated_at_ms)}</dd>
        </dl>
        <div class="actions" role="group" aria-label="Session actions">
          ${Ae.map(f=>p`<button type="button" disabled=${y}
            class=${f.confirm?"danger-outline":""} onClick=${()=>m(f)}>${f.label}</button>`)}
        </div>
      </section>
      <${Re} auth=${e} ws=${t} s=${n} status=${a.status} tick=${r} />
      <${Ne} auth=${e} base=${s} status=${a.status} />
      <${Ue} auth=${e} base=${s} status=${a.status} />
    </div>
    <${Le} events=${u} stream=${c} />
    <${De} auth=${e} ws=${t} s=${n} />
    <${B} open=${v!==null} title=${v?`${v.label}: ${t}/${n}`:""}
      confirmLabel=${v?.label} danger
      onCancel=${()=>S(null)}
      onConfirm=${()=>{let f=v;S(null),I(f.name)}}>
      <p>${v?.confirm}</p>
    </${B}>`:p`<p aria-busy="true">Loading…</p>`}function Re({auth:e,ws:t,s:n,status:s,tick:a}){let[o,i]=$(null),[d,u]=$(null),l=j(null);return P(()=>{if(s!=="SCAN_QR_CODE"){i(null);return}let c=new AbortController;return ne(e.token,t,n,c.signal).then(_=>{i(_),u(null)}).catch(_=>{_.name!=="AbortError"&&u(_)}),()=>c.abort()},[s,a,t,n]),P(()=>{l.current&&l.current!==o&&URL.revokeObjectURL(l.current),l.current=o},[o]),P(()=>()=>l.current&&URL.revokeObjectURL(l.current),[]),p`<section class="card" aria-labelledby="qr-h">
    <h2 id="qr-h">QR code</h2>
    ${s!=="SCAN_QR_CODE"?p`<p class="muted">Shown while the session waits for a scan (status SCAN_QR_CODE).</p>`:d?p`<${g} kind="error">Cannot load the QR: ${d.message}</${g}>`:o?p`<img class="qr" data-testid="qr" src=${o} width="264" height="264"
          alt="QR code to scan with WhatsApp on the phone: Settings, Linked devices, Link a device" />
          <p class="muted small">Refreshes by itself when WhatsApp rotates it.</p>`:p`<p aria-busy="true">Loading the QR…</p>`}
  </section>`}function Ne({auth:e,base:t,status:n}){let[s,a]=$(""),[o,i]=$(null),[d,u]=$(null);return p`<section class="card" aria-labelledby="pair-h">
    <h2 id="pair-h">Pairing code</h2>
    <form onSubmit=${async c=>{c.preventDefault(),u(null),i(null);try{i((await T(e.token,"POST",`${t}/pairing-code`,{body:{phone:s}})).code)}catch(_){u(_.message)}}}>
      <label for="pair-phone">Phone number (international, digits)</label>
      <input id="pair-phone" type="tel" inputmode="numeric" autocomplete="off" value=${s}
        onInput=${c=>a(c.target.value)} required />
      <button type="submit" disabled=${n!=="SCAN_QR_CODE"}>Get a pairing code</button>
    </form>
    ${o&&p`<p class="code" aria-live="polite" data-testid="pairing-code">${o}</p>
      <p class="muted small">On the phone: Linked devices, Link with phone number instead.</p>`}
    ${d&&p`<${g} kind="error">${d}</${g}>`}
  </section>`}function Ue({auth:e,base:t,status:n}){let[s,a]=$(""),[o,i]=$("Test message from the wafleet dashboard"),[d,u]=$(null);return p`<section class="card" aria-labelledby="send-h">
    <h2 id="send-h">Send a test message</h2>
    <form onSubmit=${async c=>{c.preventDefault(),u(null);try{let _=await T(e.token,"POST",`${t}/messages`,{body:{to:s,text:o}});u({kind:"info",text:`Queued as ${_.id}; its events appear below.`})}catch(_){u({kind:"error",text:_.message})}}}>
      <label for="send-to">To (phone number)</label>
      <input id="send-to" type="tel" autocomplete="off" value=${s} onInput=${c=>a(c.target.value)} required />
      <label for="send-text">Text</label>
      <textarea id="send-text" rows="2" value=${o} onInput=${c=>i(c.target.value)} required></textarea>
      <button type="submit" disabled=${n!=="WORKING"}>Send</button>
      ${n!=="WORKING"&&p`<p class="muted small">Needs status WORKING.</p>`}
    </form>
    ${d&&p`<${g} kind=${d.kind}>${d.text}</${g}>`}
  </section>`}function Le({events:e,stream:t}){let n={open:"live",connecting:"connecting…",retrying:"reconnecting…"}[t]??t;return p`<section class="card wide" aria-labelledby="events-h">
    <h2 id="events-h">Events <span class=${`stream stream-${t}`} data-testid="stream-state">${n}</span></h2>
    ${e.length===0?p`<p class="muted">No event since this page opened.</p>`:p`<ol class="events" aria-live="polite" aria-relevant="additions">
        ${e.map(s=>p`<li key=${s.id}>
          <time>${s.envelope?.timestamp?new Date(s.envelope.timestamp).toLocaleTimeString():""}</time>
          <strong>${s.event}</strong>
          <code>${s.envelope?JSON.stringify(s.envelope.payload):s.raw}</code>
        </li>`)}
      </ol>`}
  </section>`}function De({auth:e,ws:t,s:n}){let s=`/v1/workspaces/${encodeURIComponent(t)}/webhooks/dead?session=${encodeURIComponent(n)}&limit=50`,[a,o,i]=W(_=>T(e.token,"GET",s,{signal:_}),15e3,[s]),[d,u]=$(null),l=async _=>{try{await T(e.token,"POST",`/v1/workspaces/${encodeURIComponent(t)}/webhooks/dead/${_}/replay`),u({kind:"info",text:`${_} is pending delivery again.`}),i()}catch(r){u({kind:"error",text:`Replay of ${_} failed: ${r.message}`})}},c=a?.dead_letters??[];return p`<section class="card wide" aria-labelledby="dead-h">
    <h2 id="dead-h">Dead letters</h2>
    ${d&&p`<${g} kind=${d.kind}>${d.text}</${g}>`}
    ${o&&p`<${g} kind="error">Cannot load dead letters: ${o.message}</${g}>`}
    ${a&&c.length===0&&p`<p class="muted">No webhook of this session gave up.</p>`}
    ${c.length>0&&p`<div class="table-wrap"><table>
      <caption class="sr-only">Webhook events that could not be delivered</caption>
      <thead><tr><th scope="col">Event</th><th scope="col">Type</th><th scope="col">Attempts</th>
        <th scope="col">Last error</th><th scope="col">Dead since</th><th scope="col"><span class="sr-only">Action</span></th></tr></thead>
      <tbody>${c.map(_=>p`<tr>
        <th scope="row"><code>${_.id}</code></th><td>${_.event}</td><td>${_.attempts}</td>
        <td class="error-cell">${_.last_error}</td><td>${wt(_.dead_at)}</td>
        <td><button type="button" onClick=${()=>l(_.id)} aria-label=${`Replay ${_.id}`}>Replay</button></td>
      </tr>`)}</tbody></table></div>`}
  </section>`}function Ie(e,t){let n={},s=e.shards.map(u=>u.id),a=Number(t.count);(a!==s.length||s.some((u,l)=>u!==l))&&(n.count=a);let o={},i=[],d=[];for(let u of e.shards){if(n.count!==void 0&&u.id>=a)continue;let l=Number(t.weights[u.id]);l!==u.weight&&(o[u.id]=l);let c=e.draining.includes(u.id);t.draining[u.id]&&!c&&i.push(u.id),!t.draining[u.id]&&c&&d.push(u.id)}return Object.keys(o).length&&(n.weight=o),i.length&&(n.drain=i),d.length&&(n.undrain=d),n}function _e(e){return{count:e.shards.length,weights:Object.fromEntries(e.shards.map(t=>[t.id,t.weight])),draining:Object.fromEntries(e.shards.map(t=>[t.id,e.draining.includes(t.id)]))}}function pe({auth:e}){let[t,n,s]=W(m=>T(e.token,"GET","/v1/shards",{signal:m}),0,[e.token]),[a,o]=$(null),[i,d]=$(""),[u,l]=$("0"),[c,_]=$(null),[r,h]=$(null),[b,x]=$(null),v=t?.map;P(()=>{v&&o(_e(v))},[v?.version]);let S=async m=>{x(null),_(null);try{let f=await T(e.token,"POST","/v1/shards/plan",{body:m.body});_({...m,report:f})}catch(f){x({kind:"error",text:`Plan refused: ${f.message}`})}},y=async()=>{let m=c;h(null);try{let f=m.report.old_version,k=m.kind==="pin"?await T(e.token,"PUT",`/v1/shards/pins/${encodeURIComponent(m.ws)}`,{body:{shard:m.shard,version:f}}):await T(e.token,"PUT","/v1/shards",{body:{...m.body,version:f}});x({kind:"info",text:`Applied: the map is now version ${k.new_version}; ${k.moves.length} workspace(s) move.`}),_(null),s()}catch(f){x({kind:"error",text:f.status===409?`Not applied: ${f.message}`:`Apply failed: ${f.message}`})}},A=async m=>{h(null);try{let f=await T(e.token,"DELETE",`/v1/shards/pins/${encodeURIComponent(m)}`);x({kind:"info",text:`Unpinned ${m}: the map is now version ${f.new_version}.`}),s()}catch(f){x({kind:"error",text:`Unpin failed: ${f.message}`})}};if(n&&!t)return p`<${g} kind="error">Cannot load the shard map: ${n.message}</${g}>`;if(!t||!a)return p`<p aria-busy="true">Loading…</p>`;let L=Number(a.count)||0,U=Array.from({length:Math.max(L,v.shards.length)},(m,f)=>f),N=m=>o({...a,...m}),I=Object.entries(v.pins??{});return p`
    <h1>Shard map <span class="muted">version <span data-testid="shard-map-version">${v.version}</span></span></h1>
    ${b&&p`<${g} kind=${b.kind}>${b.text}</${g}>`}
    <form class="card" aria-labelledby="change-h" onSubmit=${m=>{m.preventDefault(),S({kind:"map",body:Ie(v,a)})}}>
      <h2 id="change-h">Change the map</h2>
      <label for="shard-count">Number of shards</label>
      <input id="shard-count" type="number" min="1" max="1024" value=${a.count}
        onInput=${m=>N({count:m.target.value})} />
      <div class="table-wrap"><table>
        <caption class="sr-only">Shards: weight and draining</caption>
        <thead><tr><th scope="col">Shard</th><th scope="col">Health</th><th scope="col">Weight</th><th scope="col">Draining</th></tr></thead>
        <tbody>${U.map(m=>{let f=v.shards.find(M=>M.id===m),k=t.shards.find(M=>M.id===m),R=m>=L,lt=!f;return p`<tr class=${R?"removed":lt?"added":""}>
            <th scope="row">${m}${R?" (removed)":lt?" (new)":""}</th>
            <td>${k?k.healthy?p`<span class="ok">healthy</span>`:p`<span class="bad">down</span>`:"–"}</td>
            <td>${f&&!R?p`<input type="number" step="0.1" min="0.1" aria-label=${`Weight of shard ${m}`}
                  value=${a.weights[m]} onInput=${M=>N({weights:{...a.weights,[m]:M.target.value}})} />`:lt?"1":"–"}</td>
            <td>${f&&!R?p`<input type="checkbox" aria-label=${`Drain shard ${m}`} checked=${a.draining[m]}
                  onChange=${M=>N({draining:{...a.draining,[m]:M.target.checked}})} />`:"–"}</td>
          </tr>`})}</tbody>
      </table></div>
      <div class="actions">
        <button type="submit" class="primary">Plan the change</button>
        <button type="button" onClick=${()=>{o(_e(v)),_(null)}}>Reset</button>
      </div>
    </form>
    <form class="card" aria-labelledby="pin-h" onSubmit=${m=>{m.preventDefault();let f=Number(u);S({kind:"pin",ws:i.trim(),shard:f,body:{pin:{[i.trim()]:f}}})}}>
      <h2 id="pin-h">Pins</h2>
      ${I.length?p`<ul class="pins">${I.map(([m,f])=>p`<li><code>${m}</code> → shard ${f}
            <button type="button" class="danger-outline" aria-label=${`Unpin ${m}`}
              onClick=${()=>h({kind:"unpin",ws:m})}>Unpin</button></li>`)}</ul>`:p`<p class="muted">No workspace is pinned.</p>`}
      <div class="inline">
        <div><label for="pin-ws">Workspace</label>
          <input id="pin-ws" required pattern="[A-Za-z0-9_\\-]{1,64}" value=${i} onInput=${m=>d(m.target.value)} /></div>
        <div><label for="pin-shard">Shard</label>
          <select id="pin-shard" value=${u} onChange=${m=>l(m.target.value)}>
            ${v.shards.map(m=>p`<option value=${m.id}>${m.id}</option>`)}
          </select></div>
        <button type="submit">Plan the pin</button>
      </div>
    </form>
    ${c&&p`<${Oe} plan=${c} onApply=${()=>h({kind:"apply"})} onDiscard=${()=>_(null)} />`}
    <${B} open=${r!==null}
      title=${r?.kind==="unpin"?`Unpin ${r.ws}`:"Apply this change"}
      confirmLabel=${r?.kind==="unpin"?"Unpin":"Apply"} danger
      onCancel=${()=>h(null)}
      onConfirm=${()=>r?.kind==="unpin"?A(r.ws):y()}>
      ${r?.kind==="unpin"?p`<p>The workspace goes back to the shard the hash gives it; its sessions move if that is another shard.</p>`:p`<p>Write map version ${c?.report.new_version} over version ${c?.report.old_version}?
            ${c?.report.moves.length} workspace(s) move: their sessions stop on the old shard and start on the new one.</p>`}
    </${B}>`}function Oe({plan:e,onApply:t,onDiscard:n}){let s=e.report;return p`<section class="card plan" aria-labelledby="plan-h" data-testid="plan">
    <h2 id="plan-h">Movement plan: version ${s.old_version} → ${s.new_version}</h2>
    <p><strong>${s.moves.length}</strong> of ${s.workspaces_considered} known workspaces move. Nothing is written until you apply.</p>
    ${s.moves.length>0&&p`<div class="table-wrap"><table>
      <caption class="sr-only">Workspaces that change shard</caption>
      <thead><tr><th scope="col">Workspace</th><th scope="col">From shard</th><th scope="col">To shard</th></tr></thead>
      <tbody>${s.moves.map(a=>p`<tr><th scope="row">${a.workspace}</th><td>${a.from??"–"}</td><td>${a.to??"–"}</td></tr>`)}</tbody>
    </table></div>`}
    <div class="actions">
      <button type="button" class="danger" onClick=${t}>Apply…</button>
      <button type="button" onClick=${n}>Discard</button>
    </div>
  </section>`}function he(){let e=location.hash.replace(/^#\/?/,""),[t,n]=e.split("?");return{parts:t.split("/").filter(Boolean).map(decodeURIComponent),query:new URLSearchParams(n??"")}}function We(){let[e,t]=$(he);return P(()=>{let n=()=>t(he());return addEventListener("hashchange",n),()=>removeEventListener("hashchange",n)},[]),e}function Me(){let[e,t]=$(Xt),n=We(),s=j(null),a=()=>{yt(null),t(null)};if(P(()=>Zt(a),[]),P(()=>{s.current?.focus()},[n.parts.join("/")]),!e)return p`<${le} onLogin=${_=>{yt(_),t(_),location.hash=_.scope==="admin"?"#/fleet":"#/sessions"}} />`;let o=e.scope==="admin",[i=o?"fleet":"sessions",d,u]=n.parts,l;i==="sessions"&&d&&u?l=p`<${ue} key=${`${d}/${u}`} auth=${e} ws=${d} s=${u} />`:i==="sessions"?l=p`<${de} auth=${e} query=${n.query} />`:i==="fleet"&&o?l=p`<${ce} auth=${e} />`:i==="shards"&&o?l=p`<${pe} auth=${e} />`:l=p`<p>No such page. <a href="#/sessions">Go to the sessions.</a></p>`;let c=(_,r)=>p`<a href=${`#/${_}`} aria-current=${i===_?"page":void 0}>${r}</a>`;return p`
    <a class="skip" href="#main" onClick=${_=>{_.preventDefault(),s.current?.focus()}}>Skip to content</a>
    <header class="top">
      <span class="brand">wafleet</span>
      <nav aria-label="Main">
        ${o&&c("fleet","Fleet")}
        ${c("sessions","Sessions")}
        ${o&&c("shards","Shard map")}
      </nav>
      <span class="who">${o?"admin":p`workspace <code>${e.workspace}</code>`}</span>
      <button type="button" onClick=${a}>Sign out</button>
    </header>
    <main id="main" ref=${s} tabindex="-1">${l}</main>`}var fe=document.getElementById("app");fe.textContent="";Mt(p`<${Me} />`,fe);})();
