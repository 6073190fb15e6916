package redis

import (
	"github.com/redis/rueidis"
)

// Every change to a sid's value is a read-modify-write of its owners, made
// atomic by running it in Redis as one script. KEYS[1] is the sid's key;
// ARGV: mode, dial, client (16 hex digits), TTL in milliseconds, MaxOwners,
// and, for the announcement of the new value, the channel, the writing
// instance's id and the sid. Every change of owners is published on the
// channel as "<instance> <sid>\n<value>" (see subscribe.go), in the same
// script: no round trip more.
//
//   - pin: the dial minted the sid (a handshake). Tombstones are removed,
//     like expired pins and tombstones in the memory store; a value the
//     plugin did not write is replaced (the key prefix is the plugin's).
//     Returns {result, value}: result is a store.PinResult (0 Pinned,
//     1 Refreshed, 2 Collided, 3 Refused), value the owners now stored.
//   - touch: the session is alive: extend the key's TTL, and put the pin
//     back if Redis lost it (a Redis restart, or an outage during which
//     the pin was made). A tombstone stays one. Returns 1 if the pin is
//     live in Redis, 0 if not, -1 for a value the plugin did not write
//     (left alone).
//   - drop: the session ended on its owner: turn the pin into a
//     tombstone, keeping the key's TTL. Returns 1 if a live pin was
//     dropped, 0 if there was none, -1 for a foreign value.
//
// The value's format is described in value.go.
var script = rueidis.NewLuaScript(`
local key, mode, dial, client, ttl, max = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local function announce(value)
	redis.call('PUBLISH', ARGV[6], ARGV[7] .. ' ' .. ARGV[8] .. '\n' .. value)
end
local kind = redis.call('TYPE', key)['ok']
local owners, valid = {}, false
if kind == 'string' then
	local v = redis.call('GET', key)
	if string.sub(v, 1, 5) == 'sio1\n' then
		valid = true
		for line in string.gmatch(string.sub(v, 6), '[^\n]+') do
			local state = string.sub(line, 1, 1)
			if string.len(line) < 19 or string.sub(line, 18, 18) ~= ' ' or (state ~= 'L' and state ~= 'G')
				or not string.find(string.sub(line, 2, 17), '^%x+$') or not string.find(string.sub(line, 19), '^[!-~]+$') then
				valid = false
				break
			end
			table.insert(owners, {state, string.sub(line, 2, 17), string.sub(line, 19)})
		end
		if #owners > max then valid = false end
	end
end
local foreign = kind ~= 'none' and not valid

local function encode(list)
	local parts = {'sio1'}
	for _, o in ipairs(list) do
		table.insert(parts, o[1] .. o[2] .. ' ' .. o[3])
	end
	return table.concat(parts, '\n')
end

if mode == 'pin' then
	local live, found = {}, false
	if valid then
		for _, o in ipairs(owners) do
			if o[1] == 'L' then
				if o[3] == dial then
					found = true
					o[2] = client
				end
				table.insert(live, o)
			end
		end
	end
	local result = 0
	if found then
		result = 1
	elseif #live >= max then
		return {3, encode(live)}
	else
		if #live > 0 then result = 2 end
		table.insert(live, {'L', client, dial})
	end
	local value = encode(live)
	if foreign then redis.call('DEL', key) end
	redis.call('SET', key, value, 'PX', ttl)
	if result ~= 1 then announce(value) end
	return {result, value}
end

if foreign then return -1 end

if mode == 'touch' then
	for _, o in ipairs(owners) do
		if o[3] == dial then
			if o[1] == 'G' then return 0 end
			if redis.call('PTTL', key) < tonumber(ttl) then
				redis.call('PEXPIRE', key, ttl)
			end
			return 1
		end
	end
	if #owners >= max then return 0 end
	table.insert(owners, {'L', client, dial})
	local value = encode(owners)
	redis.call('SET', key, value, 'PX', ttl)
	announce(value)
	return 1
end

if mode == 'drop' then
	for _, o in ipairs(owners) do
		if o[3] == dial then
			if o[1] == 'G' then return 0 end
			o[1] = 'G'
			local value = encode(owners)
			redis.call('SET', key, value, 'KEEPTTL')
			announce(value)
			return 1
		end
	end
	if #owners >= max then return 0 end
	table.insert(owners, {'G', client, dial})
	if kind == 'none' then
		redis.call('SET', key, encode(owners), 'PX', ttl)
	else
		redis.call('SET', key, encode(owners), 'KEEPTTL')
	end
	return 0
end
return redis.error_reply('socketio: unknown mode')
`)
