// Package imsim is a local simulator of the Tencent Cloud IM conversation-group REST API
// (v4/recentcontact/*_contact_group) with its auth, limits, codes and per-API rate limit.
// It injects faults (latency, error codes, 502s, hangs, applied-then-failed calls) on demand, so
// tests, the demo and benchmarks can run against it instead of the real service.
//
// Rules, in the order a call meets them:
//
//  1. Only POST to the four paths (else 405/404, plain HTTP).
//  2. Auth from the query: sdkappid missing → 60012, other than Config.SDKAppID → 70020;
//     identifier not in Config.Admins → 50003; usersig empty → 70002, undecodable → 70003,
//     expired → 70001, made for another identifier → 70013, another sdkappid → 70014, wrong key →
//     70009, issued before InvalidateSigs → 70052.
//  3. Rate: at most Config.RateLimit accepted calls per API in any sliding one-second window
//     (t-1s, t]; the excess answers 60007 and does not count against the window.
//  4. Faults (latency first, then at most one drawn fault).
//  5. The body: bad JSON, missing or over-long fields, a contact Type other than 1/2, not
//     exactly one group per create, more than Config.MaxContactsPerCall conversations → 50002;
//     From_Account not imported → 50001; group name over 32 bytes → 51011; a 21st group → 51010;
//     a conversation that would make the user's distinct grouped conversations exceed 1000 →
//     51008 for that item (the group is created with the items that fit, a partial result; if
//     none fit, 51008 at top level and no group); a ToGroupId in Config.DismissedGroups → 51007
//     per item; a duplicate group name per Config.DuplicateNames (default "reject" with
//     Config.DuplicateCode, default 50002); update or delete of a missing group → 51009.
//     Config's policy fields (RenameDuplicates, AddExistingCode, RemoveMissingCode,
//     MissingGroupCode, DeleteMissingOK, NameUnit, RateWindow) change the answers the public
//     documentation does not settle; `chatgroupd imcheck` finds the real API's.
//
// The lifecycle calls, where the documentation is silent, answer what the real API most
// plausibly does (each a default a Config field can change):
//
//   - update_contact_group, UpdateGroupType 1 (rename OldGroupName → NewGroupName): the request
//     is checked first (NewGroupName empty → 50002, over MaxNameBytes → 51011), then the group
//     is looked up (missing → 51009), then the new name (another group has it → 50002,
//     Config.DuplicateCode). A rename onto the group's own name succeeds and changes nothing.
//     The answer's UpdateGroupResult carries the new name and the unchanged GroupId.
//   - UpdateGroupType 2 (ContactOptType 1 add, 2 remove, per item, 1–MaxContactsPerCall items):
//     items apply one by one in request order, so a remove before an add frees room for it.
//     Each item has its ResultCode: 51008 when an add would pass MaxContacts distinct
//     conversations, 51007 for a dismissed group conversation, 0 otherwise (also for an add of
//     a conversation already in the group and a remove of one not in it, unless
//     AddExistingCode/RemoveMissingCode say otherwise). The group exists, so the top level is
//     OK even when every item failed — unlike create, where no group is made then.
//   - del_contact_group: 1–MaxGroups names; any missing → 51009 and nothing is deleted (or,
//     with DeleteMissingOK, the missing ones are skipped). A name listed twice deletes once.
//     Deleting frees the group's slot (create's 51010 counts the groups left) and its
//     conversations' share of the 1000. Group ids are never reused.
//   - update and delete never make a group, so they never answer 51010.
//
// Each API has its own rate window (rule 3), its own faults when Faults.ByAPI names it, and
// per-account faults can be limited to some APIs (SetAccountFault's apis). The call log
// (Config.CallLog, Call) records for every call its API, From_Account, the group names and
// conversations it named, start, end and arrival stamps, the answer, and what it changed
// (Applied, per-item Results and Changed, Deleted) — which the chaos checker reads to find
// effects applied twice. SaveState/LoadState carry every account's groups — names, ids,
// conversations and the next id — across restarts (`chatgroupd imsim --state-file`).
//
// The simulator states these codes (codes.go) and the UserSig algorithm (usersig.go) itself
// rather than borrowing the client's, so the two are tested against each other instead of
// sharing a mistake.
//
// Quota and windows: Stats().APIs[api].MaxWindow (gauge imsim_max_calls_per_second) is the most
// calls of one API, admitted or not, seen in any sliding second; a client that respects the
// limit keeps it at or below RateLimit.
//
// Admin endpoints, for driving a simulator in another process. They answer 404 unless
// Config.Admin.Enabled; then only a Host header naming a loopback address or one of
// Config.Admin.Hosts is served (a web page can't reach them by DNS rebinding), a POST must be
// Content-Type application/json (a cross-site form or text/plain POST can't send one without a
// CORS preflight, which is never granted), and with Config.Admin.Token set every request must
// carry "Authorization: Bearer <token>":
//
//	POST /admin/faults            body: Faults as JSON, e.g. {"error_rates":{"50004":0.1},"latency":"20ms"}
//	GET  /admin/faults            the faults in force
//	GET  /admin/state?account=a   {"account":"a","groups":[{"GroupName":…,"GroupId":…,"Contacts":[…]}]}
//	GET  /admin/stats             Stats as JSON
//	POST /admin/invalidate-sigs   sigs issued before now answer 70052
//	GET  /admin/calls             the call log (Config.CallLog) as a JSON array of Call
//	POST /admin/account-latency   body {"account":"a","latency":"5s"}: a's calls wait 5s first
//	POST /admin/account-fault     body {"account":"a","code":50004,"duration":"10m"}: a's calls answer 50004 for 10m;
//	                              with "apis":["del_contact_group"] only a's deletes do
//	POST /admin/faults            {"by_api":{"del_contact_group":{"error_rates":{"50004":0.5}}}}: deletes' own faults
package imsim
