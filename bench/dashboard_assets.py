"""The dashboard page's own CSS and JS (table sorting, filters, details, the browser-test hook),
and plotly.js from the ``plotly`` package (no CDN)."""
from __future__ import annotations


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1500px;color:#222}
table{border-collapse:collapse;margin:0.6em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#f0f0f0}table.lb th{cursor:pointer;user-select:none}
table.lb th.asc::after{content:" \\25B2"}table.lb th.desc::after{content:" \\25BC"}
table.lb tbody tr{cursor:pointer}table.lb tbody tr:hover{background:#f5f8ff}tr.trial{background:#fafafa;color:#555}
tr.selected{outline:2px solid #36c}small.study{color:#777}img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
.note{color:#555;font-size:0.9em}.problem{color:#a00}#filters{position:sticky;top:0;background:#fff;padding:.4em 0;
z-index:2;border-bottom:1px solid #ddd}#filters label{margin-right:1em}.plot{max-width:1000px}
#details{position:fixed;top:0;right:0;width:min(48em,55vw);height:100vh;overflow:auto;background:#fff;
border-left:2px solid #999;padding:1em;box-shadow:-4px 0 12px #0002;z-index:3}
#details pre{white-space:pre-wrap;word-break:break-all;background:#f6f6f6;padding:.5em;font-size:.85em}
#details .close{float:right}"""


# The page's own script: sorting, filtering, expanding a study's trials, details, plots, and a
# test hook (``#test=<JSON actions>``) that drives the page through its real event handlers and
# writes what it sees into <pre id="test-out">, for a headless browser's --dump-dom.
JS = r"""
(function(){
"use strict";
var errors=[];
window.addEventListener("error",function(ev){errors.push(String(ev.message||ev));});
var DATA=JSON.parse(document.getElementById("lb-data").textContent);
function $(s,el){return (el||document).querySelector(s);}
function $$(s,el){return Array.prototype.slice.call((el||document).querySelectorAll(s));}
function el(tag,text,attrs){var e=document.createElement(tag);if(text!=null)e.textContent=text;
  for(var k in (attrs||{}))e.setAttribute(k,attrs[k]);return e;}
function cellKey(tr,col){var td=tr.children[col];if(!td)return [2,""];var v=td.getAttribute("data-v");
  if(v!==null&&v!=="")return [0,parseFloat(v)];var t=td.textContent.trim();
  return (t===""||t==="\u2014"||t==="never")?[2,t]:[1,t.toLowerCase()];}
function sortTable(table,col,dir){
  var body=table.tBodies[0],rows=$$("tr",body),parents=rows.filter(function(r){return !r.dataset.parent;});
  parents.sort(function(a,b){var x=cellKey(a,col),y=cellKey(b,col);
    if(x[0]!==y[0])return x[0]-y[0];            /* empty cells last either way */
    var c=x[1]<y[1]?-1:x[1]>y[1]?1:0;return dir==="desc"?-c:c;});
  parents.forEach(function(p){body.appendChild(p);
    rows.filter(function(r){return r.dataset.parent===p.dataset.id;}).forEach(function(c){body.appendChild(c);});});
  $$("th",table).forEach(function(th){th.classList.remove("asc","desc");});
  table.tHead.rows[0].children[col].classList.add(dir);}
function onHeader(ev){var th=ev.currentTarget,table=th.closest("table"),col=+th.dataset.col;
  var dir=th.classList.contains("asc")?"desc":"asc";sortTable(table,col,dir);}
var expanded={};
function applyFilters(){
  var f={};$$("#filters select").forEach(function(s){f[s.dataset.filter]=s.value;});
  $$("table.lb").forEach(function(table){var shown=0;
    $$("tbody tr",table).forEach(function(tr){
      var ok=(!f.scale||tr.dataset.scale===f.scale)&&(!f.protocol||tr.dataset.protocol===f.protocol)&&
             (!f.study||tr.dataset.study===f.study)&&(!f.model||tr.dataset.model===f.model);
      if(tr.dataset.parent)ok=ok&&(expanded[tr.dataset.parent]||!!f.study);
      tr.hidden=!ok;if(ok)shown++;});
    table.closest(".group").hidden=(shown===0);});
  $$("section[data-task]").forEach(function(s){s.hidden=$$(".group",s).every(function(g){return g.hidden;});});
  $$(".plot").forEach(function(div){if(div.data&&window.Plotly)restyle(div,f);});}
function restyle(div,f){var vis=div.data.map(function(t){
    var tr=document.querySelector('tr[data-id="'+t.meta+'"]');return tr&&!tr.hidden?true:false;});
  Plotly.restyle(div,{visible:vis.map(function(v,i){return div.data[i].meta==="baseline"?true:v;})});}
function fmt(v){return v==null?"\u2014":(typeof v==="number"?(Math.abs(v)>=1e4||Math.abs(v)<1e-3&&v!==0?v.toExponential(3):+v.toPrecision(4)).toString():String(v));}
function details(id){
  if(DATA.static)return Promise.resolve(DATA.details[id]);
  return fetch("api/run/"+id).then(function(r){if(!r.ok)throw new Error("run "+id+": HTTP "+r.status);return r.json();});}
function showRow(tr){
  $$("tr.selected").forEach(function(r){r.classList.remove("selected");});tr.classList.add("selected");
  var runs=(tr.dataset.runs||"").split(" ").filter(Boolean),box=$("#details");box.hidden=false;box.textContent="";
  var close=el("button","close",{"class":"close"});close.onclick=function(){box.hidden=true;};box.appendChild(close);
  box.appendChild(el("h2",tr.dataset.model+" \u2014 config "+tr.dataset.config));
  if(!runs.length){box.appendChild(el("p","no completed runs in this row"));return Promise.resolve();}
  var pick=el("p","seeds: ");box.appendChild(pick);var body=el("div");body.id="details-body";box.appendChild(body);
  var loads=runs.map(function(id){return details(id);});
  return Promise.all(loads).then(function(ds){
    ds.forEach(function(d,i){var b=el("button","seed "+d.result.seed,{"data-run":d.id});
      b.onclick=function(){showRun(body,d);};pick.appendChild(b);pick.appendChild(document.createTextNode(" "));});
    showRun(body,ds[0]);}).catch(function(err){body.appendChild(el("p",String(err),{"class":"problem"}));});}
function showRun(box,d){box.textContent="";var r=d.result;
  box.appendChild(el("h3",r.model+" on "+r.task+", seed "+r.seed+" \u2014 "+r.status));
  box.appendChild(el("h4","reproduce"));box.appendChild(el("pre",d.command||d.recorded_command||"(unknown)",{"class":"command"}));
  if(d.recorded_command&&d.recorded_command!==d.command){box.appendChild(el("p","as recorded: ",{"class":"note"}))
    .appendChild(el("code",d.recorded_command));}
  var w=d.wandb||{};var wp=el("p","W&B: ");
  if(w.url){var a=el("a",w.url,{href:w.url,target:"_blank",rel:"noopener noreferrer"});wp.appendChild(a);}
  else wp.appendChild(document.createTextNode((w.mode||"none")+(w.id?", run "+w.id:"")+(w.project?" in "+w.project:"")+(w.sync?" \u2014 upload: "+w.sync:"")));
  box.appendChild(wp);
  box.appendChild(el("h4","metrics"));var mt=el("table");
  Object.keys(r.metrics||{}).sort().forEach(function(k){var tr=el("tr");tr.appendChild(el("td",k));tr.appendChild(el("td",fmt(r.metrics[k])));mt.appendChild(tr);});
  box.appendChild(mt);
  if(d.diagnostics){box.appendChild(el("h4","diagnostics ("+d.diagnostics.snapshots+" snapshots)"));var dt=el("table"),g=d.diagnostics;
    var hr=el("tr");["","step","\u2016W\u1d34W\u2212I\u2016","log10 \u2016\u2202L/\u2202h_1\u2016/\u2016\u2202L/\u2202h_T\u2016","modReLU singular","modReLU dead"].forEach(function(h){hr.appendChild(el("th",h));});dt.appendChild(hr);
    [["first",g.first],["last",g.last]].forEach(function(p){var tr=el("tr");tr.appendChild(el("td",p[0]));
      ["step","unitarity_error","log10_grad_first_over_last","modrelu_singular_frac","modrelu_dead_frac"].forEach(function(k){tr.appendChild(el("td",fmt(p[1][k])));});dt.appendChild(tr);});
    box.appendChild(dt);}
  var keys=Object.keys(d.curves||{});
  if(keys.length&&window.Plotly){box.appendChild(el("h4","curves (click the legend to toggle)"));var div=el("div",null,{"class":"run-plot"});box.appendChild(div);
    var main=keys.indexOf("train/loss")>=0?"train/loss":keys[0];
    Plotly.newPlot(div,keys.map(function(k){var p=d.curves[k];return {x:p.map(function(q){return q[0];}),y:p.map(function(q){return q[1];}),
      name:k,mode:"lines",visible:k===main?true:"legendonly"};}),{height:320,margin:{t:20,r:10},xaxis:{title:{text:"training iteration"}},legend:{font:{size:10}}},{responsive:true,displaylogo:false});}
  box.appendChild(el("h4","config"));box.appendChild(el("pre",JSON.stringify(r.config,null,1)));
  box.appendChild(el("h4","result.json"));var det=el("details");det.appendChild(el("summary","show"));det.appendChild(el("pre",JSON.stringify(r,null,1)));box.appendChild(det);}
var COLORS=["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b","#e377c2","#7f7f7f","#bcbd22","#17becf"];
function drawPlots(){if(!window.Plotly)return;var models=[];
  Object.keys(DATA.plots).forEach(function(g){DATA.plots[g].traces.forEach(function(t){if(models.indexOf(t.model)<0)models.push(t.model);});});
  models.sort();
  Object.keys(DATA.plots).forEach(function(gid){var p=DATA.plots[gid],div=document.getElementById("plot-"+gid);
    if(!div||!p.traces.length)return;var traces=[],dash=["solid","dash","dot","dashdot"],seen={};
    p.traces.forEach(function(t){var c=COLORS[models.indexOf(t.model)%COLORS.length],k=seen[t.model]=(seen[t.model]||0)+1;
      var xs=[],lo=[],hi=[];t.x.forEach(function(x,i){if(t.std[i]!=null){xs.push(x);lo.push(t.mean[i]-t.std[i]);hi.push(t.mean[i]+t.std[i]);}});
      if(xs.length)traces.push({x:xs.concat(xs.slice().reverse()),y:hi.concat(lo.slice().reverse()),fill:"toself",fillcolor:c+"33",
        line:{width:0},hoverinfo:"skip",showlegend:false,legendgroup:t.row,meta:t.row,name:t.name+" \u00b1 std"});
      traces.push({x:t.x,y:t.mean,mode:"lines",name:t.name,legendgroup:t.row,meta:t.row,line:{color:c,dash:dash[(k-1)%4]},
        customdata:t.std,hovertemplate:"%{fullData.name}<br>step %{x}: %{y:.4g} \u00b1 %{customdata:.2g}<extra></extra>"});});
    if(p.baseline!=null&&p.traces.length){var x0=Math.min.apply(null,p.traces.map(function(t){return t.x[0];})),
      x1=Math.max.apply(null,p.traces.map(function(t){return t.x[t.x.length-1];}));
      traces.push({x:[x0,x1],y:[p.baseline,p.baseline],mode:"lines",name:"baseline "+(+p.baseline.toPrecision(3)),meta:"baseline",line:{color:"black",dash:"dash",width:1}});}
    Plotly.newPlot(div,traces,{height:380,margin:{t:30,r:10},title:{text:p.metric+(p.smooth>1?" (rolling mean of "+p.smooth+" logged points)":"")+": mean \u00b1 1 std over seeds",font:{size:13}},
      xaxis:{title:{text:"training iteration"}},yaxis:{title:{text:p.metric}},legend:{font:{size:10}},hovermode:"closest"},{responsive:true,displaylogo:false});});}
function state(){return $$("table.lb").map(function(t){return {table:t.id,
  rows:$$("tbody tr",t).filter(function(r){return !r.hidden;}).map(function(r){return {id:r.dataset.id,model:r.dataset.model,
    config:r.dataset.config,study:r.dataset.study,rank:r.dataset.rank,cells:$$("td",r).map(function(td){return td.textContent;})};})};});}
function runTest(actions){var out=[],chain=Promise.resolve();
  actions.forEach(function(a){chain=chain.then(function(){
    if(a[0]==="click"){var th=$$("#"+a[1]+" thead th").filter(function(h){return h.firstChild&&h.firstChild.textContent===a[2];})[0];
      if(!th)throw new Error("no header "+a[2]+" in "+a[1]);th.dispatchEvent(new MouseEvent("click",{bubbles:true}));}
    else if(a[0]==="filter"){var s=$("#filter-"+a[1]);s.value=a[2];s.dispatchEvent(new Event("change",{bubbles:true}));}
    else if(a[0]==="expand"){$('tr[data-id="'+a[1]+'"] button.expand').dispatchEvent(new MouseEvent("click",{bubbles:true}));}
    else if(a[0]==="open"){$('tr[data-id="'+a[1]+'"]').dispatchEvent(new MouseEvent("click",{bubbles:true}));return pending;}
    else if(a[0]==="record"){out.push({state:state(),details:$("#details").hidden?null:$("#details").textContent,
      plots:$$(".plot").map(function(d){return {id:d.id,traces:d.data?d.data.length:0};})});}});});
  return chain.then(function(){return out;});}
var pending=Promise.resolve();
function init(){
  $$("table.lb thead th").forEach(function(th){th.addEventListener("click",onHeader);});
  $$("#filters select").forEach(function(s){s.addEventListener("change",applyFilters);});
  $$("table.lb tbody tr").forEach(function(tr){tr.addEventListener("click",function(ev){
    if(ev.target.closest("button.expand")){var id=tr.dataset.id;expanded[id]=!expanded[id];
      ev.target.textContent=(expanded[id]?"\u25be ":"\u25b8 ")+ev.target.textContent.slice(2);applyFilters();return;}
    pending=showRow(tr);});});
  try{drawPlots();}catch(err){errors.push("plots: "+err);}
  applyFilters();
  var m=/^#test=(.*)$/.exec(location.hash);
  if(m){var pre=el("pre","",{id:"test-out"});document.body.appendChild(pre);
    runTest(JSON.parse(decodeURIComponent(m[1]))).then(function(out){pre.textContent=JSON.stringify({steps:out,errors:errors});},
      function(err){errors.push(String(err));pre.textContent=JSON.stringify({steps:[],errors:errors});});}}
if(document.readyState==="loading")document.addEventListener("DOMContentLoaded",init);else init();
})();
"""



def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()
